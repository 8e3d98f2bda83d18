package syncgate

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
)

func TestAFailedSyncFailsEveryWriterThatBeganBeforeIt(t *testing.T) {
	g, err := NewGates().For(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mine := g.Epoch()
	if err := g.Sync(g.Epoch(), func() error { return syscall.EIO }); !errors.Is(err, syscall.EIO) {
		t.Fatalf("the failing sync returned %v", err)
	}
	ran := false
	err = g.Sync(mine, func() error { ran = true; return nil })
	if !errors.Is(err, ErrFailedSince) || ran {
		t.Fatalf("a writer that began before the failure: err %v, synced %v; want ErrFailedSince without a sync", err, ran)
	}
	if err := g.Sync(g.Epoch(), func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("a writer that began after it: err %v, synced %v", err, ran)
	}
}

func TestSyncsRunOneAtATime(t *testing.T) {
	g, err := NewGates().For(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	inside := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- g.Sync(g.Epoch(), func() error { close(inside); <-release; return syscall.EIO })
	}()
	<-inside
	since := g.Epoch() // the failing sync has not returned yet
	second := make(chan error)
	go func() { second <- g.Sync(since, func() error { return nil }) }()
	close(release)
	if err := <-done; !errors.Is(err, syscall.EIO) {
		t.Fatal(err)
	}
	// The second waited for the first, so it learns of the failure.
	if err := <-second; !errors.Is(err, ErrFailedSince) {
		t.Fatalf("a sync queued behind a failing one: %v, want ErrFailedSince", err)
	}
}

func TestGatesHandOutOnePerFileSystem(t *testing.T) {
	dir := t.TempDir()
	gs := NewGates()
	g, err := gs.For(dir)
	if err != nil {
		t.Fatal(err)
	}
	if later, err := gs.For(filepath.Join(dir, "not", "made", "yet")); err != nil || later != g {
		t.Errorf("a directory still to be made on the same file system has another gate (%v)", err)
	}
	if proc, err := gs.For("/proc"); err != nil || proc == g || proc == nil {
		t.Errorf("/proc, another file system, shares the gate or has none (%v)", err)
	}
	var noGates *Gates
	none, err := noGates.For(dir)
	if err != nil || none != nil {
		t.Errorf("no gates handed out %v (%v)", none, err)
	}
	if none.Epoch() != 0 {
		t.Error("a nil gate counts failures")
	}
	if err := none.Sync(7, func() error { return nil }); err != nil {
		t.Errorf("a nil gate refused a sync: %v", err)
	}
}

// A flush that failed outside the gate (the commit log's rotation) fails
// the writers that began before it; the log's sticky error, handed back
// by every later append, is one failure, not one per append.
func TestAFailureOutsideTheGateCountsOnce(t *testing.T) {
	g, err := NewGates().For(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mine := g.Epoch()
	sticky := fmt.Errorf("commit log write to seg-0001: %w", syscall.EIO)
	g.Failed(sticky)
	if err := g.Sync(mine, func() error { return nil }); !errors.Is(err, ErrFailedSince) {
		t.Fatalf("a writer that began before the failure: %v, want ErrFailedSince", err)
	}
	after := g.Epoch()
	g.Failed(sticky)
	if err := g.Sync(after, func() error { return nil }); err != nil {
		t.Fatalf("the same error again failed a writer that began after it: %v", err)
	}
	var none *Gate
	none.Failed(sticky) // a spool without a gate
}
