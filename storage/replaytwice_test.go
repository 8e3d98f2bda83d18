package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// A large value set twice under one key in one commit log's life: replay
// must keep the later value, not take the key away because the earlier
// record's value is no longer the key's.
func TestReplayKeepsALargeKeySetTwice(t *testing.T) {
	dir := killedTwice(t)
	s := openTest(t, dir, "a")
	defer s.Close()
	dl, err := s.DeadLetters("a")
	must(t, err)
	if len(dl) != 1 || dl[0].Reason != "AR: second answer" {
		t.Fatalf("after replaying the log: %d dead letters (%+v), want the one with the second answer", len(dl), dl)
	}
}

// killedTwice makes a spool whose one large message's dead-letter copy was
// written twice with different bytes (another reason and attempt count),
// its commit log put back to replay both (replayAgain); it returns the
// spool's directory.
func killedTwice(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	s := openTest(t, dir, "a")
	r, err := s.Append(context.Background(), Entry{Source: "s", Raw: largeMsg(1, 300<<10), Dests: []string{"a"}})
	must(t, err)
	s.dbMu.RLock()
	_, err = s.copyToDead("a", r.Seq, "AR: first answer", 1)
	s.dbMu.RUnlock()
	must(t, err)
	must(t, s.Kill("a", r.Seq, "AR: second answer", 2))
	replayAgain(t, s, dir)
	return dir
}

// replayAgain closes s and puts back the commit log as it was before the
// close, so the next open replays it over a Badger that has everything: a
// cut after every record reached the card.
func replayAgain(t *testing.T, s *Spool, dir string) {
	t.Helper()
	must(t, s.syncLogs(true))
	snap := t.TempDir()
	copyTree(t, filepath.Join(dir, commitLogDir), snap)
	must(t, s.Close())
	must(t, os.RemoveAll(filepath.Join(dir, commitLogDir)))
	copyTree(t, snap, filepath.Join(dir, commitLogDir))
}

// A large message delivered, its segment dropped, all within one commit
// log's life: the message's own record is replayed after its key is gone,
// which must not make replay take back what that record set (its trace).
// (Segments of 16, so the first is dropped and the second stays open.)
func TestReplayAfterTheSegmentOfALargeMessageWasDropped(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	zero := time.Duration(0)
	s, err := Open(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 16, Retain: &zero}, Options{Destinations: []string{"a"}, GCInterval: time.Hour})
	must(t, err)
	var guids []string
	for i := range 20 { // a segment of 16 and the next, open
		raw := msg(i)
		if i == 1 {
			raw = largeMsg(i, 300<<10)
		}
		r, err := s.Append(ctx, Entry{Source: "s", Raw: raw, Dests: []string{"a"}, ControlID: fmt.Sprintf("C%d", i)})
		must(t, err)
		guids = append(guids, r.GUID)
	}
	deliverAll(t, s, "a")
	if _, err := s.dropDelivered(); err != nil {
		t.Fatal(err)
	}
	replayAgain(t, s, dir)
	s, err = Open(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 16, Retain: &zero}, Options{Destinations: []string{"a"}, GCInterval: time.Hour})
	must(t, err)
	defer s.Close()
	for i, g := range guids {
		mt := traceOf(t, s, g)
		if !slices.Contains(whats(mt), EvReceived) || !slices.Contains(whats(mt), EvDelivered) {
			t.Errorf("message %d's trace after the replay: %v, want received and delivered", i, whats(mt))
		}
	}
	if q := s.Stats().Destinations["a"].Queued; q != 0 {
		t.Errorf("%d queued after the replay, want 0", q)
	}
}

// Salvage applies the log as an open does, and keeps the twice-set dead
// letter too.
func TestSalvageKeepsALargeKeySetTwice(t *testing.T) {
	dir := killedTwice(t)
	rep, err := Salvage(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64}, Options{Destinations: []string{"a"}})
	must(t, err)
	if rep.Dead != 1 || rep.Queued != 0 {
		t.Fatalf("salvage kept %d dead letters and re-queued %d (problems %q), want the one dead letter", rep.Dead, rep.Queued, rep.Problems)
	}
}
