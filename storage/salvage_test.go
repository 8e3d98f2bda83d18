package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// spoilManifest makes the spool one Badger refuses to open, as a cut in the
// middle of a MANIFEST rewrite on a card that tears writes could.
func spoilManifest(t *testing.T, dir string) []byte {
	t.Helper()
	bad := bytes.Repeat([]byte("torn manifest "), 8)
	if err := os.WriteFile(filepath.Join(dir, "MANIFEST"), bad, 0o640); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64}, Options{Destinations: []string{"a", "b"}}); !errors.Is(err, ErrUnreadable) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open of a spoilt spool: %v, want ErrUnreadable", err)
	}
	return bad
}

// A spool whose MANIFEST is torn is salvaged from its table files: what a
// destination still owed is queued again under the same GUID, what every
// destination had is not, dead letters stay dead, remembered remote IDs stay
// remembered, and the unreadable spool is moved aside untouched.
func TestSalvageFromTables(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := openTest(t, dir, "a", "b")
	ctx := context.Background()
	guid := map[uint64]string{}
	for i := range 40 {
		e := Entry{Source: "src", Raw: msg(i), Dests: []string{"a", "b"}}
		if i == 3 {
			e.RemoteID = "REMOTE-3"
		}
		r, err := s.Append(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		guid[r.Seq] = r.GUID
	}
	ma, _ := s.Next("a", 0, 100)
	mb, _ := s.Next("b", 0, 100)
	for i := range 15 {
		if err := s.Delivered("a", ma[i].Seq); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		if err := s.Delivered("b", mb[i].Seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Kill("b", mb[10].Seq, "max_attempts", 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // Close flushes the memtable into a table
		t.Fatal(err)
	}
	bad := spoilManifest(t, dir)

	rep, err := Salvage(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64}, Options{Destinations: []string{"a", "b"}})
	if err != nil {
		t.Fatalf("salvage: %v (%+v)", err, rep)
	}
	t.Logf("report: %+v", rep)
	if rep.Method != "tables+logs" || rep.Queued != 29 || rep.Delivered != 11 || rep.Dead != 1 || rep.RemoteIDs != 1 || rep.QueuedNoRecord != 0 {
		t.Errorf("report %+v: want tables+logs, 29 queued, 11 owed to nobody (10 delivered everywhere, 1 delivered to a and dead for b), 1 dead, 1 remote ID", rep)
	}
	if got, err := os.ReadFile(filepath.Join(rep.MovedTo, "MANIFEST")); err != nil || !bytes.Equal(got, bad) {
		t.Errorf("the unreadable spool was not kept as it was in %s: %v", rep.MovedTo, err)
	}
	s = openTest(t, dir, "a", "b")
	defer s.Close()
	na, _ := s.Next("a", 0, 100)
	nb, _ := s.Next("b", 0, 100)
	if len(na) != 25 || len(nb) != 29 {
		t.Fatalf("after salvage a owes %d (want 25) and b %d (want 29)", len(na), len(nb))
	}
	for i, m := range na {
		if m.GUID != ma[15+i].GUID || !bytes.Equal(m.Raw, ma[15+i].Raw) {
			t.Fatalf("a's message %d came back as %s, want %s with the same content", i, m.GUID, ma[15+i].GUID)
		}
	}
	if dl, err := s.DeadLetters("b"); err != nil || len(dl) != 1 || dl[0].GUID != mb[10].GUID {
		t.Errorf("dead letters of b after salvage: %v %v", dl, err)
	}
	if r, err := s.Append(ctx, Entry{Source: "src", Raw: msg(3), Dests: []string{"a"}, RemoteID: "REMOTE-3"}); err != nil || !r.Duplicate {
		t.Errorf("a remembered remote ID was forgotten by the salvage: %+v %v", r, err)
	}
}

// At a cut, acknowledged messages may be only in the memtable log (not yet
// in a table). With the MANIFEST torn, they are replayed from the log.
func TestSalvageFromMemtableLog(t *testing.T) {
	base := t.TempDir()
	live := filepath.Join(base, "live")
	s := openTest(t, live, "a")
	var guids []string
	for i := range 20 {
		r, err := s.Append(context.Background(), Entry{Source: "src", Raw: msg(i), Dests: []string{"a"}})
		if err != nil {
			t.Fatal(err)
		}
		guids = append(guids, r.GUID)
	}
	// The disk as the cut left it: every file as it is now, the process gone.
	dir := filepath.Join(base, "spool")
	if err := copyDir(live, dir); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_ = os.Remove(filepath.Join(dir, lockFile))
	spoilManifest(t, dir)
	rep, err := Salvage(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64}, Options{Destinations: []string{"a"}})
	if err != nil {
		t.Fatalf("salvage: %v (%+v)", err, rep)
	}
	if rep.Queued != 20 {
		t.Fatalf("report %+v: want all 20 messages queued again", rep)
	}
	s = openTest(t, dir, "a")
	defer s.Close()
	got, _ := s.Next("a", 0, 100)
	if len(got) != 20 || got[0].GUID != guids[0] || got[19].GUID != guids[19] {
		t.Fatalf("after salvage a owes %d messages", len(got))
	}
}

// Salvage refuses to run while a daemon holds the spool.
func TestSalvageRefusesARunningSpool(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := openTest(t, dir, "a")
	defer s.Close()
	if _, err := Salvage(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64}, Options{Destinations: []string{"a"}}); !errors.Is(err, ErrInUse) {
		t.Fatalf("salvage of an open spool: %v, want ErrInUse", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatal("the open spool was moved")
	}
}

// Messages over 256 KiB live in the value log. When Badger cannot open the
// spool, salvage still reads them, from the tables' value pointers and from
// the memtable logs, and re-queues them whole.
func TestSalvageReadsLargeMessages(t *testing.T) {
	for _, where := range []string{"tables", "logs"} {
		t.Run(where, func(t *testing.T) {
			base := t.TempDir()
			live := filepath.Join(base, "live")
			s := openTest(t, live, "a")
			want := map[string][]byte{}
			for i := range 6 {
				raw := msg(i)
				if i%2 == 0 {
					raw = largeMsg(i, (300+100*i)<<10)
				}
				r, err := s.Append(context.Background(), Entry{Source: "src", Raw: raw, Dests: []string{"a"}})
				if err != nil {
					t.Fatal(err)
				}
				want[r.GUID] = raw
			}
			dir := filepath.Join(base, "spool")
			if where == "logs" { // the disk as a cut leaves it: nothing flushed to a table
				if err := copyDir(live, dir); err != nil {
					t.Fatal(err)
				}
				s.Close()
				_ = os.Remove(filepath.Join(dir, lockFile))
			} else { // Close flushes the memtable into a table
				s.Close()
				if err := os.Rename(live, dir); err != nil {
					t.Fatal(err)
				}
			}
			spoilManifest(t, dir)
			rep, err := Salvage(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64}, Options{Destinations: []string{"a"}})
			if err != nil || rep.Queued != 6 || rep.Method != "tables+logs" {
				t.Fatalf("salvage: %v (%+v); want all 6 queued again from the pieces", err, rep)
			}
			s = openTest(t, dir, "a")
			defer s.Close()
			got, err := s.Next("a", 0, 100)
			if err != nil || len(got) != 6 {
				t.Fatalf("after salvage a owes %d messages (%v)", len(got), err)
			}
			for _, m := range got {
				if !bytes.Equal(m.Raw, want[m.GUID]) {
					t.Fatalf("message %s came back with %d bytes, want %d", m.GUID, len(m.Raw), len(want[m.GUID]))
				}
			}
		})
	}
}

// A salvage keeps the traces: each message's trace (header, control-ID
// index, events) comes across as it was, so "where did X go" answers the
// same after it. A delivered message, not re-queued, points at no stored
// copy (a replay counts it missing instead of sending whatever now has its
// old number); a re-queued one points at its new copy.
func TestSalvageKeepsTraces(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s := openTest(t, dir, "a", "b")
	ctx := context.Background()
	for i := range 6 {
		if _, err := s.Append(ctx, traceEntry(i, "a", "b")); err != nil {
			t.Fatal(err)
		}
	}
	ma, _ := s.Next("a", 0, 100)
	mb, _ := s.Next("b", 0, 100)
	for i := range 2 {
		if err := s.Delivered("a", ma[i].Seq); err != nil {
			t.Fatal(err)
		}
		if err := s.Delivered("b", mb[i].Seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Kill("b", mb[2].Seq, "AR", 1); err != nil {
		t.Fatal(err)
	}
	before := map[string]MessageTrace{}
	for i := range 6 {
		id := fmt.Sprintf("C%06d", i)
		before[id] = traceOf(t, s, id)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	spoilManifest(t, dir)
	rep, err := Salvage(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64}, Options{Destinations: []string{"a", "b"}})
	if err != nil {
		t.Fatalf("salvage: %v (%+v)", err, rep)
	}
	s = openTest(t, dir, "a", "b")
	defer s.Close()
	for id, was := range before {
		res, err := s.Trace(TraceQuery{ID: id})
		if err != nil || len(res.Messages) != 1 {
			t.Fatalf("trace %s after salvage: %d messages, %v; want 1 (report %+v)", id, len(res.Messages), err, rep)
		}
		got := res.Messages[0]
		if got.GUID != was.GUID || !got.ReceivedAt.Equal(was.ReceivedAt) || got.Peer != was.Peer || got.Type != was.Type || !slices.Equal(whats(got), whats(was)) {
			t.Errorf("trace %s after salvage:\n%+v\nwant\n%+v", id, got, was)
		}
		noMarker(t, got)
	}
	if st := s.Stats(); st.TraceBytes == 0 {
		t.Errorf("trace bytes after salvage = 0: the copied traces are not counted toward trace_max_bytes")
	}
	res, err := s.Replay(ctx, ReplayRequest{To: "a", Since: time.Now().Add(-time.Hour), DryRun: true, Partial: true})
	if err != nil || res.Matched != 6 || res.Missing != 2 {
		t.Errorf("replay dry run after salvage: %+v %v; want 6 matched, 2 missing (the delivered ones, not salvaged)", res, err)
	}
}
