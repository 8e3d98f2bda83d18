package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"
)

// storedHead is a message's header key's value; nil when it has none.
func storedHead(t *testing.T, s *Spool, guid string) []byte {
	t.Helper()
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(traceKey(uuid.MustParse(guid)))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	must(t, err)
	return v
}

// deliveredToAThenPruned stores one message for a and b, delivers it to a
// (which writes its header key) and prunes its trace; it returns its GUID.
func deliveredToAThenPruned(t *testing.T, s *Spool) string {
	t.Helper()
	r, err := s.Append(context.Background(), traceEntry(5, "a", "b"))
	must(t, err)
	ma, _ := s.Next("a", 0, 10)
	must(t, s.Delivered("a", ma[0].Seq))
	if _, err := s.pruneTraceBatch(time.Now().Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	return r.GUID
}

// appendTraced stores traceEntry 0 to n-1 for dests and returns their GUIDs.
func appendTraced(t *testing.T, s *Spool, n int, dests ...string) []string {
	t.Helper()
	guids := make([]string, 0, n)
	for i := range n {
		r, err := s.Append(context.Background(), traceEntry(i, dests...))
		must(t, err)
		guids = append(guids, r.GUID)
	}
	return guids
}

// countFamily counts the keys of one family.
func countFamily(t *testing.T, s *Spool, fam byte) int {
	t.Helper()
	n := 0
	must(t, s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{fam}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	}))
	return n
}

// A message's commit writes no trace key (its header rides in its queue
// entries), yet its trace answers by GUID, control ID and time while it is
// queued; its first release writes the header and index keys, a later
// release leaves them as they are, and the trace reads the same throughout.
func TestQueuedMessageTraceRidesInItsQueueEntry(t *testing.T) {
	s := openTest(t, t.TempDir(), "a", "b")
	defer s.Close()
	guids := appendTraced(t, s, 3, "a", "b")
	if n := countFamily(t, s, famTrace) + countFamily(t, s, famTraceCtl); n != 0 {
		t.Fatalf("%d header and index keys after 3 commits, want 0: the header rides in the queue entries", n)
	}
	queued := traceOf(t, s, "C000001")
	if queued.GUID != guids[1] || queued.Type != "ORU^R01" || queued.Peer != "10.0.0.9:4000" || queued.Size != len(markerMsg(1)) ||
		len(queued.Destinations) != 2 || queued.Destinations[0].State != "queued" || queued.Events[0].What != EvReceived {
		t.Fatalf("trace of a queued message: %+v", queued)
	}
	if byGUID := traceOf(t, s, guids[1]); byGUID.ControlID != "C000001" {
		t.Fatalf("trace by GUID of a queued message: %+v", byGUID)
	}

	ma, _ := s.Next("a", 0, 10)
	must(t, s.Delivered("a", ma[1].Seq))
	first := storedHead(t, s, guids[1])
	if first == nil || countFamily(t, s, famTraceCtl) != 1 {
		t.Fatalf("after the first release: header %x, %d index keys; want both written", first, countFamily(t, s, famTraceCtl))
	}
	mb, _ := s.Next("b", 0, 10)
	must(t, s.Delivered("b", mb[1].Seq))
	if second := storedHead(t, s, guids[1]); !bytes.Equal(first, second) {
		t.Fatalf("the second release rewrote the header: %x, was %x", second, first)
	}
	done := traceOf(t, s, "C000001")
	if done.ReceivedAt != queued.ReceivedAt || done.Size != queued.Size || done.Peer != queued.Peer ||
		done.Destinations[0].State != "delivered" || done.Destinations[1].State != "delivered" {
		t.Fatalf("trace after both releases: %+v; while queued: %+v", done, queued)
	}

	res, err := s.Trace(TraceQuery{Since: time.Now().Add(-time.Hour)})
	if err != nil || len(res.Messages) != 3 {
		t.Fatalf("by time: %d messages (%v), want 3", len(res.Messages), err)
	}
	for i, mt := range res.Messages {
		if mt.GUID != guids[i] {
			t.Errorf("by time, message %d is %s, want %s: stored and queued headers out of order", i, mt.GUID, guids[i])
		}
	}
	res, err = s.Trace(TraceQuery{Since: time.Now().Add(-time.Hour), State: "queued", Dest: "a"})
	if err != nil || len(res.Messages) != 2 || res.Messages[0].GUID != guids[0] || res.Messages[1].GUID != guids[2] {
		t.Fatalf("queued for a: %+v (%v), want messages 0 and 2", res.Messages, err)
	}
}

// A query over a long queue answers its limit, oldest first, with stored
// and queued headers interleaved (every third message released for one of
// its two destinations, so still queued with a stored header), each once,
// and says there is more.
func TestTraceLimitOverALongQueue(t *testing.T) {
	s := openTest(t, t.TempDir(), "a", "b")
	defer s.Close()
	guids := appendTraced(t, s, 60, "a", "b")
	ms, _ := s.Next("a", 0, 100)
	for i := 0; i < len(ms); i += 3 {
		must(t, s.Delivered("a", ms[i].Seq))
	}
	since := time.Now().Add(-time.Hour)
	res, err := s.Trace(TraceQuery{Since: since, Limit: 10})
	if err != nil || len(res.Messages) != 10 || !res.More {
		t.Fatalf("limit 10 over 60: %d messages, more %v (%v)", len(res.Messages), res.More, err)
	}
	for i, mt := range res.Messages {
		if mt.GUID != guids[i] {
			t.Fatalf("message %d of the answer is %s, want %s", i, mt.GUID, guids[i])
		}
	}
	res, err = s.Trace(TraceQuery{Since: since, Limit: 1000})
	if err != nil || len(res.Messages) != 60 || res.More {
		t.Fatalf("limit 1000 over 60: %d messages, more %v (%v)", len(res.Messages), res.More, err)
	}
	for i := 0; i < 60; i += 7 {
		want := "queued"
		if i%3 == 0 {
			want = "delivered"
		}
		if got := res.Messages[i].Destinations[0].State; got != want {
			t.Errorf("message %d: %s, want %s", i, got, want)
		}
	}
}

// A queued message moved to the dead letters because it cannot be read
// keeps its trace: the move writes its header and a "dead" event.
func TestQuarantinedMessageKeepsItsTrace(t *testing.T) {
	s := openTest(t, t.TempDir(), "a")
	defer s.Close()
	r, err := s.Append(context.Background(), traceEntry(7, "a"))
	must(t, err)
	must(t, s.db.Update(func(txn *badger.Txn) error { return txn.Set(msgKey(1, r.Seq), []byte{0, 0, 0, 0}) }))
	if ms, err := s.Next("a", 0, 10); err != nil || len(ms) != 0 {
		t.Fatalf("Next: %d, %v; want the unreadable message moved aside", len(ms), err)
	}
	if storedHead(t, s, r.GUID) == nil {
		t.Fatal("no header key after the move to the dead letters")
	}
	mt := traceOf(t, s, "C000007")
	if mt.Destinations[0].State != "dead" || fmt.Sprint(whats(mt)) != "[received dead]" {
		t.Fatalf("trace after the move: %v, state %s", whats(mt), mt.Destinations[0].State)
	}
}

// The header a queue entry carries decodes to what was encoded, and
// anything else is refused as corrupt, never read past its end.
func FuzzQueuedHead(f *testing.F) {
	h := newHead(traceEntry(3, "a", "b"), time.Unix(1_800_000_000, 5))
	h.GUID = uuid.MustParse("0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b")
	key := namedSeqKey(famQueue, "a", 42)
	f.Add(queueValue(7, h.Received, h.GUID, h.encodeQueued()))
	h.ReplayOf, h.Route = h.GUID, []string{"a"}
	f.Add(queueValue(7, h.Received, h.GUID, h.encodeQueued()))
	f.Add(queueValue(7, h.Received, h.GUID, []byte{queuedHeadVersion, 0x80}))
	f.Fuzz(func(t *testing.T, v []byte) {
		got, err := queuedHead(key, v)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v does not say the header is corrupt", err)
			}
			return
		}
		if got == nil {
			if len(v) > queueValueLen {
				t.Fatalf("a %d-byte entry carries no header", len(v))
			}
			return
		}
		if got.Seq != 42 || got.ACK != "AA" {
			t.Fatalf("header not pointed at its queue entry: %+v", got)
		}
		if len(got.ControlID) > maxControlID || len(got.Type) > maxControlID {
			return // the encoder cuts these, as for a stored header
		}
		again, err := queuedHead(key, queueValue(got.Seg, got.Received, got.GUID, got.encodeQueued()))
		if err != nil || fmt.Sprint(again) != fmt.Sprint(got) {
			t.Fatalf("round trip: %+v (%v), want %+v", again, err, got)
		}
	})
}

// A trace pruned after the first of its message's releases stays gone:
// the header the other destinations' queue entries still carry is not
// read back as a message queued everywhere (which would say "queued" for
// the destination it was delivered to), nor written again by their release.
func TestPrunedTraceOfAPartlyDeliveredMessageStaysGone(t *testing.T) {
	s := openTest(t, t.TempDir(), "a", "b")
	defer s.Close()
	guid := deliveredToAThenPruned(t, s)
	if storedHead(t, s, guid) != nil {
		t.Fatal("the prune left the header")
	}
	for _, id := range []string{"C000005", guid} {
		if res, err := s.Trace(TraceQuery{ID: id}); err != nil || len(res.Messages) != 0 {
			t.Fatalf("trace %s after its prune: %+v (%v), want none", id, res.Messages, err)
		}
	}
	res, err := s.Trace(TraceQuery{Since: time.Now().Add(-time.Hour), State: "queued", Dest: "a"})
	if err != nil || len(res.Messages) != 0 {
		t.Fatalf("queued for a after the prune: %+v (%v), want none: it was delivered", res.Messages, err)
	}
	mb, _ := s.Next("b", 0, 10)
	must(t, s.Delivered("b", mb[0].Seq))
	if res, err := s.Trace(TraceQuery{ID: "C000005"}); err != nil || len(res.Messages) != 0 {
		t.Fatalf("trace after b's release: %+v (%v), want none: the pruned header came back", res.Messages, err)
	}
}

// A dead letter whose retry was answered with an error because the sync
// failed keeps its trace through the re-open, saying what the disk holds
// (dead, or queued again): the retry's trace keys share its fate.
func TestFailedRetryOfADeadLetterKeepsItsTrace(t *testing.T) {
	s := openSmall(t, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)), "a")
	defer s.Close()
	r, err := s.Append(context.Background(), traceEntry(1, "a"))
	must(t, err)
	ms, _ := s.Next("a", 0, 10)
	must(t, s.Kill("a", ms[0].Seq, "receiver said AR", 5))
	rec := &syncRecorder{}
	hookSyncs(s, rec)
	rec.setFail(func(string) error { return syscall.EIO })
	if _, err := s.RetryDead("a", r.GUID); err == nil {
		t.Fatal("the retry succeeded although its sync failed")
	}
	rec.setFail(nil)
	waitTaken(t, s, 2, 15*time.Second, "the spool did not re-open within 15 s of the disk working again")
	res, err := s.Trace(TraceQuery{ID: r.GUID})
	if err != nil || len(res.Messages) != 1 {
		t.Fatalf("trace of the dead letter after its failed retry: %d messages (%v), want 1", len(res.Messages), err)
	}
	want := "queued"
	if dl, _ := s.DeadLetters("a"); len(dl) == 1 {
		want = "dead"
	}
	if mt := res.Messages[0]; mt.ControlID != "C000001" || whats(mt)[0] != EvReceived || mt.Destinations[0].State != want {
		t.Fatalf("trace after the failed retry: %v, state %s; the disk says %s", whats(mt), mt.Destinations[0].State, want)
	}
}

// A salvage does not bring back, from the queue entry of a destination
// still owed the message, the pruned trace of a message delivered to
// another: that copy of the header would say "queued" for both.
func TestSalvageLeavesAPrunedTracePruned(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := openTest(t, dir, "a", "b")
	guid := deliveredToAThenPruned(t, s)
	must(t, s.Close())
	spoilManifest(t, dir)
	rep, err := Salvage(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64}, Options{Destinations: []string{"a", "b"}})
	if err != nil || rep.Queued != 1 {
		t.Fatalf("salvage: %v (%+v), want the message re-queued for b", err, rep)
	}
	s = openTest(t, dir, "a", "b")
	defer s.Close()
	res, err := s.Trace(TraceQuery{ID: guid})
	if err != nil {
		t.Fatal(err)
	}
	for _, mt := range res.Messages {
		for _, d := range mt.Destinations {
			if d.Name == "a" && d.State == "queued" {
				t.Fatalf("after the salvage the trace says %s is queued for a, where it was delivered: %+v", guid, mt)
			}
		}
	}
}

// An undeliverable message routed again follows its new route in its
// trace, under its control ID: queued, then delivered.
func TestRoutedAgainUndeliverableFollowsItsRoute(t *testing.T) {
	s := openTest(t, t.TempDir(), "a")
	defer s.Close()
	r, err := s.Append(context.Background(), traceEntry(9))
	must(t, err)
	if mt := traceOf(t, s, "C000009"); mt.Route != "undeliverable" {
		t.Fatalf("route %q before the retry, want undeliverable", mt.Route)
	}
	got, err := s.RetryUndeliverable(func([]byte) ([]string, bool) { return []string{"a"}, false })
	if err != nil || got.Queued != 1 {
		t.Fatalf("RetryUndeliverable: %+v, %v", got, err)
	}
	mt := traceOf(t, s, "C000009")
	if mt.GUID != r.GUID || mt.Route != "destinations" || len(mt.Destinations) != 1 || mt.Destinations[0].State != "queued" {
		t.Fatalf("trace once routed again: route %q, destinations %+v; want a, queued", mt.Route, mt.Destinations)
	}
	ms, _ := s.Next("a", 0, 10)
	must(t, s.Delivered("a", ms[0].Seq))
	if mt := traceOf(t, s, "C000009"); len(mt.Destinations) != 1 || mt.Destinations[0].State != "delivered" || mt.Type != "ORU^R01" {
		t.Fatalf("trace once delivered: type %q, destinations %+v; want a, delivered", mt.Type, mt.Destinations)
	}
}

// A replay window over messages still queued (some everywhere, their
// headers only in the queue; some delivered to one destination) matches
// them all and re-queues their copies in receive order.
func TestReplayOfAWindowWithQueuedMessages(t *testing.T) {
	clk := &stepClock{t: time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)}
	s, err := Open(Config{Dir: t.TempDir(), MaxBytes: 64 << 20, SegmentMessages: 16}, Options{Destinations: []string{"a", "b"}, GCInterval: time.Hour, Now: clk.now})
	must(t, err)
	defer s.Close()
	ctx := context.Background()
	for i := range 20 {
		_, err := s.Append(ctx, traceEntry(i, "a", "b"))
		must(t, err)
		clk.add(time.Second)
	}
	ma, _ := s.Next("a", 0, 100)
	for _, m := range ma[:10] {
		must(t, s.Delivered("a", m.Seq))
	}
	since := time.Date(2026, 12, 1, 21, 0, 0, 0, time.UTC)
	res, err := s.Replay(ctx, ReplayRequest{To: "b", Since: since, Until: since.Add(2 * time.Hour)})
	if err != nil || res.Matched != 20 || res.Replayed != 20 || res.Missing != 0 {
		t.Fatalf("replay: %+v, %v; want 20 matched and replayed", res, err)
	}
	mb, _ := s.Next("b", 0, 100)
	if len(mb) != 40 {
		t.Fatalf("%d queued for b, want 20 + 20 copies", len(mb))
	}
	for i, m := range mb[20:] {
		if want := fmt.Sprintf("|C%06d|", i); !bytes.Contains(m.Raw, []byte(want)) {
			t.Fatalf("copy %d holds %q, want %s: out of order or the wrong message", i, m.Raw[:60], want)
		}
	}
}

// A control ID shared by a delivered message and a queued one answers
// both, oldest first, and the limit cuts the answer where it says.
func TestControlIDSharedByAStoredAndAQueuedHeader(t *testing.T) {
	s := openTest(t, t.TempDir(), "a")
	defer s.Close()
	var guids []string
	for range 3 {
		r, err := s.Append(context.Background(), traceEntry(4, "a"))
		must(t, err)
		guids = append(guids, r.GUID)
	}
	ms, _ := s.Next("a", 0, 10)
	must(t, s.Delivered("a", ms[1].Seq))
	res, err := s.Trace(TraceQuery{ID: "C000004"})
	if err != nil || len(res.Messages) != 3 {
		t.Fatalf("by control ID: %d messages (%v), want 3", len(res.Messages), err)
	}
	for i, mt := range res.Messages {
		if mt.GUID != guids[i] {
			t.Fatalf("message %d is %s, want %s", i, mt.GUID, guids[i])
		}
	}
	res, err = s.Trace(TraceQuery{ID: "C000004", Limit: 2})
	if err != nil || len(res.Messages) != 2 || !res.More || res.Messages[1].Destinations[0].State != "delivered" {
		t.Fatalf("by control ID, limit 2: %+v, more %v (%v)", res.Messages, res.More, err)
	}
	res, err = s.Trace(TraceQuery{ID: "C000004", State: "queued"})
	if err != nil || len(res.Messages) != 2 || res.Messages[0].GUID != guids[0] || res.Messages[1].GUID != guids[2] {
		t.Fatalf("queued by control ID: %+v (%v), want messages 0 and 2", res.Messages, err)
	}
}
