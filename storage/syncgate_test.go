package storage

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// A failed flush loses every unsynced write on the card, the spool's too,
// but reaches only the writer that asked for it (the power-cut rig's
// EIO campaign, run 4, lost a file destination's message this way). A
// failure another writer on the spool's file system saw must fail the
// spool's next sync as its own would: refused, then re-opened from disk.
func TestAFailedSyncOfAnotherWriterFaultsTheSpool(t *testing.T) {
	s, gate := openGated(t)
	if err := appendMsg(s, 1); err != nil {
		t.Fatal(err)
	}
	// A file destination's flush fails.
	if err := gate.Sync(gate.Epoch(), func() error { return syscall.EIO }); !errors.Is(err, syscall.EIO) {
		t.Fatalf("the other writer's sync: %v", err)
	}
	if err := appendMsg(s, 2); !errors.Is(err, ErrStorageFault) {
		t.Fatalf("Append after another writer's sync failed: %v, want a storage fault", err)
	}
	waitTaken(t, s, 3, 15*time.Second, "the spool did not re-open within 15 s")
	ms, err := s.Next("a", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, string(m.Raw))
	}
	if len(got) != 2 || got[0] != string(msg(1)) || got[1] != string(msg(3)) {
		t.Fatalf("queued after the re-open: %d messages, want the first and the third (the second was answered AE)", len(got))
	}
}

// openGated opens a spool with one destination, "a", on a gate of its
// own (closed at the test's end).
func openGated(t *testing.T) (*Spool, *syncgate.Gate) {
	t.Helper()
	dir := t.TempDir()
	gate, err := syncgate.NewGates().For(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Config{Dir: dir, MaxBytes: 256 << 20, SegmentMessages: 16}, Options{Destinations: []string{"a"}, GCInterval: time.Hour, Gate: gate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, gate
}

// gatedSpool opens a spool with one destination, "a", on a gate of its
// own, every sync of it through the recorder it returns.
func gatedSpool(t *testing.T) (*Spool, *syncgate.Gate, *syncRecorder) {
	t.Helper()
	s, gate := openGated(t)
	r := &syncRecorder{}
	hookSyncs(s, r)
	return s, gate, r
}

func failSegments(name string) error {
	if strings.HasPrefix(name, "seg-") {
		return syscall.EIO
	}
	return nil
}

// The commit log flushes outside any group's sync when a record does not
// fit the segment: it seals the segment and makes it durable before it
// begins the next (and it is the only flush in direct-I/O mode). When that
// flush fails the card may have dropped a file destination's unsynced
// file as well; the destination must hear of it as of any other failed
// sync of the spool's.
func TestAFailedCommitLogRotationFailsTheOtherWriters(t *testing.T) {
	s, gate, r := gatedSpool(t)
	since := gate.Epoch() // a file destination begins writing
	// Records that go whole into the log (under largeValue), until one
	// does not fit; syncMu keeps the spool's own syncs out meanwhile, so
	// the first flush is the rotation's.
	// Random bytes: the log compresses records, and zeros would never fill it.
	rec := appendSetOp(nil, badger.NewEntry([]byte("xrotation-test"), randomBytes(200<<10)))
	r.setFail(failSegments)
	s.syncMu.Lock()
	s.writeMu.Lock()
	var err error
	for i := 0; err == nil && i < 100; i++ {
		err = s.logAppend(rec)
	}
	s.writeMu.Unlock()
	s.syncMu.Unlock()
	if !errors.Is(err, ErrStorageFault) {
		t.Fatalf("an append whose rotation's flush failed: %v, want a storage fault", err)
	}
	// The spool's next sync, refused for its fault, must not hide it.
	if _, err := s.Append(context.Background(), Entry{Source: "s", Raw: msg(1), Dests: []string{"a"}}); !errors.Is(err, ErrStorageFault) {
		t.Fatalf("Append after the failed rotation: %v, want a storage fault", err)
	}
	if err := gate.Sync(since, func() error { return nil }); !errors.Is(err, syncgate.ErrFailedSince) {
		t.Fatalf("a file destination's sync after the spool's failed flush: %v, want ErrFailedSince (else its message is counted delivered)", err)
	}
}

// The re-open after a fault ends with the commit log's new header, written
// and flushed; a failure there is the spool's failed flush like any other.
func TestAFailedCommitLogRestartFailsTheOtherWriters(t *testing.T) {
	s, gate, r := gatedSpool(t)
	r.setFail(failSegments)
	if err := gate.Sync(gate.Epoch(), func() error { return syscall.EIO }); !errors.Is(err, syscall.EIO) {
		t.Fatal(err)
	}
	if _, err := s.Append(context.Background(), Entry{Source: "s", Raw: msg(1), Dests: []string{"a"}}); !errors.Is(err, ErrStorageFault) {
		t.Fatalf("Append after another writer's failed sync: %v, want a storage fault", err)
	}
	since := gate.Epoch()
	before := len(r.names())
	deadline := time.Now().Add(30 * time.Second)
	for !slices.ContainsFunc(r.names()[before:], func(n string) bool { return strings.HasPrefix(n, "seg-") }) {
		if time.Now().After(deadline) {
			t.Fatal("the spool did not try to re-open within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := gate.Sync(since, func() error { return nil }); !errors.Is(err, syncgate.ErrFailedSince) {
		t.Fatalf("a file destination's sync after the re-open's failed commit-log flush: %v, want ErrFailedSince", err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// The rotation's flush runs inside the gate, not beside it: were it to run
// while a file destination's flush is under way, that flush could fail
// and drop the log's sealed segment from the card's cache, with the log
// told its own flush worked (the review's remaining window).
func TestTheRotationsFlushWaitsForTheGate(t *testing.T) {
	s, gate, r := gatedSpool(t)
	var held, overlapped atomic.Bool
	r.onSync = func(name string) {
		if strings.HasPrefix(name, "seg-") && held.Load() {
			overlapped.Store(true)
		}
	}
	inside, release, released := make(chan struct{}), make(chan struct{}), make(chan error)
	go func() {
		released <- gate.Sync(gate.Epoch(), func() error { // a file destination's flush
			held.Store(true)
			close(inside)
			<-release
			held.Store(false)
			return nil
		})
	}()
	<-inside
	rec := appendSetOp(nil, badger.NewEntry([]byte("xrotation-test"), randomBytes(200<<10)))
	appended := make(chan error)
	go func() {
		s.syncMu.Lock() // the spool's own syncs stay out: the first flush is the rotation's
		defer s.syncMu.Unlock()
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
		rotations := s.clog.Stats().Rotations
		var err error
		for err == nil && s.clog.Stats().Rotations == rotations {
			err = s.logAppend(rec)
		}
		appended <- err
	}()
	select {
	case err := <-appended: // the rotation did not wait
		close(release)
		<-released
		t.Fatalf("the rotation went ahead while another writer held the gate (err %v, overlapped %v)", err, overlapped.Load())
	case <-time.After(2 * time.Second):
	}
	close(release)
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	if err := <-appended; err != nil {
		t.Fatal(err)
	}
	if overlapped.Load() {
		t.Fatal("the rotation's flush ran while another writer's flush held the gate")
	}
}

// Close flushes what was logged since the last group (delivery marks,
// counters). That flush is the spool's like any other: when it fails the
// card may have dropped another writer's unsynced writes with it (a state
// file the box replaces while it restarts, a file destination's last
// delivery), so the others must hear of it before their next sync.
func TestAFailedFlushAtCloseFailsTheOtherWriters(t *testing.T) {
	s, gate, r := gatedSpool(t)
	deliverFirst(t, s)
	since := gate.Epoch() // another writer begins writing
	before := len(r.names())
	r.setFail(failSegments)
	_ = s.Close()
	if !slices.ContainsFunc(r.names()[before:], func(n string) bool { return strings.HasPrefix(n, "seg-") }) {
		t.Fatalf("Close flushed no commit-log segment (synced %v): the test failed no flush", r.names()[before:])
	}
	if err := gate.Sync(since, func() error { return nil }); !errors.Is(err, syncgate.ErrFailedSince) {
		t.Fatalf("another writer's sync after the spool's flush at Close failed: %v, want ErrFailedSince", err)
	}
}

// A cleanly closed spool starts its commit log afresh: a new header,
// written and flushed. That flush is the spool's too: when it fails the
// other writers on the card must hear of it.
func TestAFailedCommitLogRestartAtCloseFailsTheOtherWriters(t *testing.T) {
	s, gate, r := gatedSpool(t)
	deliverFirst(t, s)
	var segs atomic.Int32
	before := len(r.names())
	r.setFail(func(name string) error {
		// Close's own flush of the delivery mark goes through; the new
		// header's, after it, fails.
		if strings.HasPrefix(name, "seg-") && segs.Add(1) > 1 {
			return syscall.EIO
		}
		return nil
	})
	since := gate.Epoch() // another writer begins writing
	_ = s.Close()
	if segs.Load() < 2 {
		t.Fatalf("Close flushed %d commit-log segments (synced %v), want its own and the new header's: the test failed no flush", segs.Load(), r.names()[before:])
	}
	if err := gate.Sync(since, func() error { return nil }); !errors.Is(err, syncgate.ErrFailedSince) {
		t.Fatalf("another writer's sync after the commit log's new header failed at Close: %v, want ErrFailedSince", err)
	}
}

// deliverFirst stores a message and marks it delivered: the mark is
// logged, not synced, so Close has a flush to make.
func deliverFirst(t *testing.T, s *Spool) {
	t.Helper()
	if err := appendMsg(s, 1); err != nil {
		t.Fatal(err)
	}
	ms, err := s.Next("a", 0, 1)
	if err != nil || len(ms) != 1 {
		t.Fatalf("Next: %d messages, %v", len(ms), err)
	}
	if err := s.Delivered("a", ms[0].Seq); err != nil {
		t.Fatal(err)
	}
}

// After a failed sync the spool leaves its SYNC-FAILED mark and syncs its
// directory. That sync is a flush like any other: the writers that began
// after the first failure (noting the moved epoch) must hear when it fails
// too, or a state file written meanwhile is taken for durable.
func TestAFailedSyncOfTheMarkFailsTheOtherWriters(t *testing.T) {
	s, gate, r := gatedSpool(t)
	if err := appendMsg(s, 1); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Base(s.Dir())
	var dirSyncs atomic.Int32
	r.setFail(func(name string) error {
		if name == dir {
			dirSyncs.Add(1)
			return syscall.EIO
		}
		return nil
	})
	if err := gate.Sync(gate.Epoch(), func() error { return syscall.EIO }); !errors.Is(err, syscall.EIO) {
		t.Fatal(err) // a file destination's flush fails
	}
	since := gate.Epoch() // a state file begins after that failure
	if err := appendMsg(s, 2); !errors.Is(err, ErrStorageFault) {
		t.Fatalf("Append after another writer's failed sync: %v, want a storage fault", err)
	}
	if dirSyncs.Load() == 0 {
		t.Fatal("the spool's directory was not synced after the fault: the test failed no flush")
	}
	if err := gate.Sync(since, func() error { return nil }); !errors.Is(err, syncgate.ErrFailedSince) {
		t.Fatalf("a state file's sync after the mark's directory sync failed: %v, want ErrFailedSince", err)
	}
}
