package storage

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// WaitForLock ends when its context does (a daemon's SIGTERM), names the
// holder by the process id it left in the lock file, and finds a spool
// that does not exist yet free.
func TestWaitForLockEndsWithItsContext(t *testing.T) {
	dir := t.TempDir()
	held, err := Open(Config{Dir: dir, MaxBytes: 64 << 20, SegmentMessages: 64}, Options{Destinations: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	err = WaitForLock(ctx, dir, time.Minute, slog.New(slog.DiscardHandler))
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Errorf("WaitForLock on a held spool, cancelled: %v; want context.Canceled naming pid %d", err, os.Getpid())
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("WaitForLock returned %s after its context ended", d)
	}
	if err := WaitForLock(context.Background(), filepath.Join(dir, "not-yet"), 0, nil); err != nil {
		t.Errorf("WaitForLock on a spool that does not exist: %v, want nil", err)
	}
}
