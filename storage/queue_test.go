package storage

import (
	"context"
	"testing"
	"time"
)

// TestOutOfOrderDeliveriesSurviveReopen: lanes finish messages out of
// spool order. Each delivery removes that message's own queue entry, so
// after a reopen exactly the undelivered ones are offered, in spool order,
// with their GUIDs, and a segment is dropped only once all of it is done.
func TestOutOfOrderDeliveriesSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 16}, Options{Destinations: []string{"a"}, GCInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var guids []string
	for i := range 40 {
		r, err := s.Append(context.Background(), Entry{Source: "src", Raw: msg(i), Dests: []string{"a"}})
		if err != nil {
			t.Fatal(err)
		}
		guids = append(guids, r.GUID)
	}
	ms, err := s.Next("a", 0, 100)
	if err != nil || len(ms) != 40 {
		t.Fatalf("next: %d messages, err %v", len(ms), err)
	}
	// The first segment (messages 0-15) all delivered, out of order, and
	// some of the second and third.
	order := []int{17, 3, 0, 30, 15, 2, 9, 1, 4, 14, 13, 12, 11, 10, 8, 7, 6, 5, 20}
	done := map[int]bool{}
	for _, i := range order {
		done[i] = true
	}
	for _, i := range order {
		if err := s.Delivered("a", ms[i].Seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 16}, Options{Destinations: []string{"a"}, GCInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ms, err = s.Next("a", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i, g := range guids {
		if !done[i] {
			want = append(want, g)
		}
	}
	if len(ms) != len(want) {
		t.Fatalf("after reopen %d queued, want %d", len(ms), len(want))
	}
	for i, m := range ms {
		if m.GUID != want[i] || (i > 0 && m.Seq <= ms[i-1].Seq) {
			t.Fatalf("after reopen message %d is %s (seq %d), want %s in spool order", i, m.GUID, m.Seq, want[i])
		}
	}
	if q := s.Stats().Destinations["a"]; q.Queued != int64(len(want)) || q.Delivered != uint64(len(order)) {
		t.Fatalf("stats after reopen: %+v", q)
	}
	// The fully delivered first segment goes; the other two stay whole.
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Messages != 24 {
		if time.Now().After(deadline) {
			t.Fatalf("spool holds %d messages; the delivered segment should be dropped, leaving 24", s.Stats().Messages)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
