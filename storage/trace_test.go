package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"
)

// markerMsg carries a patient name and identifier that must never show in a
// trace: only MSH-9 and MSH-10 may.
func markerMsg(i int) []byte {
	return fmt.Appendf(nil, "MSH|^~\\&|LAB|WARD|EHR|HOSP|20260101120000||ORU^R01|C%06d|P|2.5.1\rPID|1||MRN-MARKER-%d||MARKERSURNAME^PHI\rOBX|1|NM|GLU||%d\r", i, i, i)
}

func traceEntry(i int, dests ...string) Entry {
	return Entry{Source: "lab", Raw: markerMsg(i), Dests: dests, ControlID: fmt.Sprintf("C%06d", i), Type: "ORU^R01", Peer: "10.0.0.9:4000"}
}

// traceOf reads the one trace of control ID id.
func traceOf(t *testing.T, s *Spool, id string) MessageTrace {
	t.Helper()
	res, err := s.Trace(TraceQuery{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Messages) != 1 {
		t.Fatalf("trace %s: %d messages, want 1", id, len(res.Messages))
	}
	return res.Messages[0]
}

func whats(mt MessageTrace) []string {
	var out []string
	for _, e := range mt.Events {
		out = append(out, e.What)
	}
	return out
}

// noMarker fails if any trace output holds field content.
func noMarker(t *testing.T, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	for _, m := range []string{"MARKER", "PHI", "GLU"} {
		if strings.Contains(string(b), m) {
			t.Fatalf("trace output holds field content %q: %s", m, b)
		}
	}
}

// Every state a message can be in, as its trace tells it.
func TestTraceFollowsEveryState(t *testing.T) {
	s := openTest(t, t.TempDir(), "a", "b")
	defer s.Close()
	ctx := context.Background()
	for i := 1; i <= 4; i++ {
		if _, err := s.Append(ctx, traceEntry(i, "a")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(ctx, traceEntry(5)); err != nil { // undeliverable
		t.Fatal(err)
	}
	s.Eaten(traceEntry(6), "bin")
	s.Refused(traceEntry(7), "AE")
	ms, _ := s.Next("a", 0, 10)
	s.Attempt("a", ms[0].GUID, 0, "AE")
	if err := s.Delivered("a", ms[0].Seq); err != nil {
		t.Fatal(err)
	}
	s.Attempt("a", ms[1].GUID, 0, "HTTP 503")
	if err := s.Kill("a", ms[1].Seq, "gave up", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill("a", ms[2].Seq, "gave up", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RetryDead("a", ms[2].GUID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PurgeDead("a", ms[1].GUID); err != nil {
		t.Fatal(err)
	}
	waitLazy(t, s, "C000006")
	waitLazy(t, s, "C000007")
	cases := []struct {
		id, state string
		events    []string
	}{
		{"C000001", "delivered", []string{"received", "attempt", "delivered"}},
		{"C000002", "purged", []string{"received", "attempt", "dead", "purged"}},
		{"C000003", "queued", []string{"received", "dead", "retried"}},
		{"C000004", "queued", []string{"received"}},
	}
	for _, c := range cases {
		mt := traceOf(t, s, c.id)
		if got := mt.Destinations[0].State; got != c.state || !slices.Equal(whats(mt), c.events) {
			t.Errorf("%s: state %s events %v, want %s %v", c.id, got, whats(mt), c.state, c.events)
		}
		noMarker(t, mt)
	}
	if mt := traceOf(t, s, "C000001"); mt.Destinations[0].Attempts != 2 || mt.Destinations[0].LastError != "AE" || mt.Type != "ORU^R01" || mt.Peer != "10.0.0.9:4000" {
		t.Errorf("delivered after a retry: %+v", mt)
	}
	if mt := traceOf(t, s, "C000005"); mt.Route != "undeliverable" || !slices.Equal(whats(mt), []string{"received", "undeliverable"}) {
		t.Errorf("undeliverable: %+v", mt)
	}
	if mt := traceOf(t, s, "C000006"); mt.Route != "rubbish:bin" || !slices.Equal(whats(mt), []string{"received", "eaten"}) {
		t.Errorf("eaten: %+v", mt)
	}
	if mt := traceOf(t, s, "C000007"); mt.Route != "refused" || mt.ACK != "AE" || !slices.Equal(whats(mt), []string{"received", "refused"}) {
		t.Errorf("refused: %+v", mt)
	}
	// By GUID, and by state over a range.
	if mt := traceOf(t, s, ms[0].GUID); mt.ControlID != "C000001" {
		t.Errorf("by GUID: %+v", mt)
	}
	res, err := s.Trace(TraceQuery{Since: time.Now().Add(-time.Hour), State: "queued"})
	if err != nil || len(res.Messages) != 2 {
		t.Fatalf("queued over the last hour: %d, %v; want C000003 and C000004", len(res.Messages), err)
	}
	noMarker(t, res)
}

// waitLazy waits for a lazily written trace to be readable.
func waitLazy(t *testing.T, s *Spool, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := s.Trace(TraceQuery{ID: id})
		if err == nil && len(res.Messages) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace of %s not written within 10 s (%v)", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The trace's "received" and "delivered" survive a reopen, as the message
// and its delivery mark do.
func TestTraceSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, "a")
	if _, err := s.Append(context.Background(), traceEntry(1, "a")); err != nil {
		t.Fatal(err)
	}
	ms, _ := s.Next("a", 0, 1)
	if err := s.Delivered("a", ms[0].Seq); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, "a")
	defer s.Close()
	if mt := traceOf(t, s, "C000001"); !slices.Equal(whats(mt), []string{"received", "delivered"}) {
		t.Fatalf("after reopen: %v", whats(mt))
	}
	if s.Stats().TraceBytes == 0 {
		t.Fatal("trace bytes not kept across the reopen")
	}
}

// A message answered AE because its group's sync failed leaves no trace
// once the spool has re-opened from disk.
func TestInDoubtMessageLeavesNoTrace(t *testing.T) {
	s := openSmall(t, t.TempDir(), nil, "a")
	defer s.Close()
	r := &syncRecorder{}
	hookSyncs(s, r)
	ctx := context.Background()
	if _, err := s.Append(ctx, traceEntry(1, "a")); err != nil {
		t.Fatal(err)
	}
	r.setFail(func(string) error { return syscall.EIO })
	if _, err := s.Append(ctx, traceEntry(2, "a")); err == nil {
		t.Fatal("Append succeeded although its sync failed")
	}
	r.setFail(nil)
	deadline := time.Now().Add(15 * time.Second)
	for s.Stats().Reopens == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the spool did not re-open")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if res, _ := s.Trace(TraceQuery{ID: "C000002"}); len(res.Messages) != 0 {
		t.Fatalf("message answered AE still has a trace: %+v", res.Messages)
	}
	traceOf(t, s, "C000001")
}

// stepClock is a clock the test moves.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Replay: a window of 1,000 messages comes back in order under new GUIDs
// that name their originals; a dry run changes nothing; a range partly
// dropped is refused with how much is missing unless partial.
func TestReplayWindowInOrder(t *testing.T) {
	clk := &stepClock{t: time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)}
	s, err := Open(Config{Dir: t.TempDir(), MaxBytes: 64 << 20, SegmentMessages: 64}, Options{Destinations: []string{"a"}, GCInterval: time.Hour, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var orig []string
	for i := range 1000 {
		r, err := s.Append(ctx, traceEntry(i, "a"))
		if err != nil {
			t.Fatal(err)
		}
		orig = append(orig, r.GUID)
		clk.add(time.Second) // 1,000 messages over 16m40s
	}
	deliverAll(t, s, "a")
	since := time.Date(2026, 12, 1, 22, 3, 0, 0, time.UTC)
	req := ReplayRequest{To: "a", Since: since, Until: since.Add(10 * time.Minute), DryRun: true}
	res, err := s.Replay(ctx, req)
	if err != nil || res.Matched != 600 || res.Replayed != 0 || res.Missing != 0 {
		t.Fatalf("dry run: %+v, %v; want 600 matched, none replayed", res, err)
	}
	if st := s.Stats().Destinations["a"]; st.Queued != 0 {
		t.Fatalf("dry run queued %d", st.Queued)
	}
	req.DryRun = false
	if res, err = s.Replay(ctx, req); err != nil || res.Replayed != 600 {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	ms, _ := s.Next("a", 0, 1000)
	if len(ms) != 600 {
		t.Fatalf("%d queued after the replay, want 600", len(ms))
	}
	for i, m := range ms {
		want := fmt.Sprintf("|C%06d|", 180+i)
		if !strings.Contains(string(m.Raw), want) || m.GUID == orig[180+i] {
			t.Fatalf("replayed #%d: GUID %s, want content %s under a new GUID (original %s)", i, m.GUID, want, orig[180+i])
		}
		if mt := traceOf(t, s, m.GUID); mt.ReplayOf != orig[180+i] {
			t.Fatalf("replayed #%d: replay_of %q, want %s", i, mt.ReplayOf, orig[180+i])
		}
	}
	if mt := traceOf(t, s, orig[180]); !slices.Contains(whats(mt), EvReplayed) {
		t.Fatalf("original has no replayed event: %v", whats(mt))
	}
	// Drop the oldest retained segments, then replay from the start.
	setRetain(s, 0)
	clk.add(time.Hour)
	if _, err := s.dropDelivered(); err != nil {
		t.Fatal(err)
	}
	setRetain(s, time.Hour)
	req = ReplayRequest{To: "a", Since: time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC), Until: since}
	res, err = s.Replay(ctx, req)
	if err == nil || res.Missing != 180 || !strings.Contains(err.Error(), "180 of 180") {
		t.Fatalf("replay of a pruned range: %+v, %v; want refused, 180 missing", res, err)
	}
	t.Logf("refused: %v", err)
}

func setRetain(s *Spool, d time.Duration) {
	s.mu.Lock()
	s.cfg.Retain = &d
	s.mu.Unlock()
}

func deliverAll(t *testing.T, s *Spool, dest string) {
	t.Helper()
	for {
		ms, err := s.Next(dest, 0, 256)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 {
			return
		}
		for _, m := range ms {
			if err := s.Delivered(dest, m.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// Retention under pressure: with max_bytes small, retained messages go
// first, and no message still owed is refused while any are retained.
func TestRetainedMakeWayUnderPressure(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir(), MaxBytes: 16 << 20, SegmentMessages: 64}, Options{Destinations: []string{"a", "b"}, GCInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	body := strings.Repeat("X", 8<<10)
	add := func(i int, dest string) error {
		e := traceEntry(i, dest)
		e.Raw = append(e.Raw, body...)
		_, err := s.Append(ctx, e)
		return err
	}
	// ~8 MiB delivered to a, retained (retain_max_bytes is half of
	// max_bytes), then ~10 MiB owed to b: together past the low-water mark.
	i := 0
	for ; i < 1000; i++ {
		if err := add(i, "a"); err != nil {
			t.Fatalf("message %d for a: %v", i, err)
		}
		if i%64 == 63 {
			deliverAll(t, s, "a")
		}
	}
	deliverAll(t, s, "a")
	if st := s.Stats(); st.RetainedMessages == 0 {
		t.Fatalf("nothing retained: %+v", st)
	}
	for ; i < 2200; i++ {
		retained := s.Stats().RetainedMessages
		if err := add(i, "b"); err != nil {
			t.Fatalf("owed message %d refused with %d messages still retained: %v", i, retained, err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for st := s.Stats(); st.RetainedBytes+st.Bytes > 16<<20 && time.Now().Before(deadline); st = s.Stats() {
		time.Sleep(20 * time.Millisecond)
	}
	st := s.Stats()
	t.Logf("after pressure: %d owed, %d bytes; retained %d messages, %d bytes", st.Messages, st.Bytes, st.RetainedMessages, st.RetainedBytes)
	if st.RetainedBytes+st.Bytes > 16<<20 {
		t.Fatalf("retained %d + owed %d bytes pass max_bytes", st.RetainedBytes, st.Bytes)
	}
}

// The traces stay within trace_max_bytes: the oldest go first. (A queued
// message's header rides in its queue entry and is the queue's, not the
// traces', until its first release.)
func TestTracesBoundedInBytes(t *testing.T) {
	s, err := Open(Config{Dir: t.TempDir(), MaxBytes: 64 << 20, TraceMaxBytes: 1 << 20}, Options{Destinations: []string{"a"}, GCInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := range 12000 {
		if _, err := s.Append(ctx, traceEntry(i, "a")); err != nil {
			t.Fatal(err)
		}
	}
	deliverAll(t, s, "a")
	deadline := time.Now().Add(20 * time.Second)
	for s.Stats().TraceBytes > 1<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("trace bytes %d, over trace_max_bytes 1 MiB after 20 s", s.Stats().TraceBytes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if res, _ := s.Trace(TraceQuery{ID: "C000000"}); len(res.Messages) != 0 {
		t.Fatal("the oldest trace was kept while newer ones fill trace_max_bytes")
	}
	traceOf(t, s, "C011999")
}

// Retained messages stay encrypted at rest, and so do their traces: with
// a key set, no file of the spool holds a message's content or its control
// ID in plain text after it was delivered, retained and traced.
func TestRetainedStayEncrypted(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 16, EncryptionKeyFile: keyFile}, Options{Destinations: []string{"a"}, GCInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// One message holds a token that compresses to nothing shorter, so
	// that only encryption can hide it; its control ID is as unique.
	token := fmt.Sprintf("%x", time.Now().UnixNano()*7919)
	for i := range 40 {
		e := traceEntry(i, "a")
		if i == 1 {
			e.Raw = fmt.Appendf(nil, "MSH|^~\\&|A|B|C|D|20260101||ORU^R01|Q%s|P|2.5\rPID|||%s\r", token, token)
			e.ControlID = "Q" + token
		}
		if _, err := s.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	deliverAll(t, s, "a")
	if st := s.Stats(); st.RetainedMessages < 16 {
		t.Fatalf("retained %d messages, want the delivered segments kept", st.RetainedMessages)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		for _, plain := range []string{token} {
			if containsBytes(b, []byte(plain)) {
				t.Errorf("%q in plain text in %s", plain, p)
			}
		}
		return nil
	})
}

// Delivered segments are kept for spool.retain and then dropped; dead
// letters are never dropped by retention.
func TestRetainedForTheirTimeThenDropped(t *testing.T) {
	clk := &stepClock{t: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)}
	retain := time.Hour
	s, err := Open(Config{Dir: t.TempDir(), MaxBytes: 64 << 20, SegmentMessages: 16, Retain: &retain}, Options{Destinations: []string{"a"}, GCInterval: time.Hour, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 40 {
		if _, err := s.Append(context.Background(), traceEntry(i, "a")); err != nil {
			t.Fatal(err)
		}
	}
	ms, _ := s.Next("a", 0, 1)
	if err := s.Kill("a", ms[0].Seq, "gave up", 1); err != nil {
		t.Fatal(err)
	}
	deliverAll(t, s, "a")
	clk.add(59 * time.Minute)
	if _, err := s.dropDelivered(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.RetainedMessages != 32 || st.OldestRetained == nil {
		t.Fatalf("after 59 minutes: retained %d (oldest %v), want the two closed segments, 32 messages", st.RetainedMessages, st.OldestRetained)
	}
	clk.add(2 * time.Minute)
	if _, err := s.dropDelivered(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.RetainedMessages != 0 || st.Destinations["a"].Dead != 1 {
		t.Fatalf("after 61 minutes: retained %d, dead %d; want none retained and the dead letter kept", st.RetainedMessages, st.Destinations["a"].Dead)
	}
	if dls, _ := s.DeadLetters("a"); len(dls) != 1 || len(dls[0].Raw) == 0 {
		t.Fatalf("dead letter after retention dropped its segment: %+v", dls)
	}
}

// A spool written with the first header layout (oldest first, family
// 0xF1) has its headers moved at open: each trace answers by control ID,
// GUID and time as before, and none is left under the old key.
func TestOldTraceHeadersMovedAtOpen(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, "a")
	var guids []string
	for i := range 3 {
		r, err := s.Append(context.Background(), traceEntry(i, "a"))
		if err != nil {
			t.Fatal(err)
		}
		guids = append(guids, r.GUID)
	}
	deliverAll(t, s, "a") // a queued message's header is in its queue entry
	// Put the headers back under the old layout, as the previous firmware
	// left them: it wrote Badger alone, with no commit log beside it.
	must(t, s.Close())
	must(t, os.RemoveAll(filepath.Join(dir, commitLogDir)))
	db, err := badger.Open(badgerOptions(Config{Dir: dir}, nil, slog.New(slog.DiscardHandler)))
	must(t, err)
	err = db.Update(func(txn *badger.Txn) error {
		for _, id := range guids {
			g := uuid.MustParse(id)
			item, err := txn.Get(traceKey(g))
			if err != nil {
				return err
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if err := txn.Set(append([]byte{famTraceV1}, g[:]...), v); err != nil {
				return err
			}
			if err := txn.Delete(traceKey(g)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	must(t, db.Close())
	s = openTest(t, dir, "a")
	defer s.Close()
	for i, id := range guids {
		if mt := traceOf(t, s, id); mt.ControlID != fmt.Sprintf("C%06d", i) {
			t.Errorf("trace %s after the move: %+v", id, mt)
		}
		traceOf(t, s, fmt.Sprintf("C%06d", i))
	}
	res, err := s.Trace(TraceQuery{Since: time.Now().Add(-time.Hour)})
	if err != nil || len(res.Messages) != 3 || res.Messages[0].GUID != guids[0] || res.Messages[2].GUID != guids[2] {
		t.Errorf("by time after the move: %+v %v; want the 3, oldest first", res, err)
	}
	_ = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{famTraceV1}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			t.Errorf("key %x left under the old layout", it.Item().Key())
		}
		return nil
	})
}
