package storage

import (
	"errors"
	"testing"
	"time"
)

// A second Open of a held spool fails with ErrInUse when it may not wait, and
// succeeds once the holder lets go when it may: a starting daemon waits out an
// operator's `hl7edge spool stats` instead of exiting on Badger's
// "Cannot acquire directory lock".
func TestOpenWaitsForTheSpoolLock(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64}
	first, err := Open(cfg, Options{Destinations: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := Open(cfg, Options{Destinations: []string{"a"}}); !errors.Is(err, ErrInUse) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("second Open without waiting: %v, want ErrInUse", err)
	}
	released := make(chan struct{})
	go func() {
		time.Sleep(300 * time.Millisecond)
		first.Close()
		close(released)
	}()
	second, err := Open(cfg, Options{Destinations: []string{"a"}, LockWait: time.Minute})
	if err != nil {
		t.Fatalf("Open that may wait a minute: %v", err)
	}
	select {
	case <-released:
	default:
		t.Fatal("second Open succeeded while the first still held the spool")
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
}
