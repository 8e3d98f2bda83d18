package storage

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// A failed flush loses every unsynced write on the card, the spool's too,
// but reaches only the writer that asked for it (the power-cut rig's
// EIO campaign, run 4, lost a file destination's message this way). A
// failure another writer on the spool's file system saw must fail the
// spool's next sync as its own would: refused, then re-opened from disk.
func TestAFailedSyncOfAnotherWriterFaultsTheSpool(t *testing.T) {
	dir := t.TempDir()
	gate, err := syncgate.For(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(Config{Dir: dir, MaxBytes: 256 << 20, SegmentMessages: 16}, Options{Destinations: []string{"a"}, GCInterval: time.Hour, Gate: gate})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	add := func(i int) error {
		_, err := s.Append(ctx, Entry{Source: "s", Raw: msg(i), Dests: []string{"a"}})
		return err
	}
	if err := add(1); err != nil {
		t.Fatal(err)
	}
	// A file destination's flush fails.
	if err := gate.Sync(gate.Epoch(), func() error { return syscall.EIO }); !errors.Is(err, syscall.EIO) {
		t.Fatalf("the other writer's sync: %v", err)
	}
	if err := add(2); !errors.Is(err, ErrStorageFault) {
		t.Fatalf("Append after another writer's sync failed: %v, want a storage fault", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for add(3) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the spool did not re-open within 15 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
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
