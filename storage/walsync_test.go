package storage

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestWALSyncerFollowsBadger holds Badger to what the syncer relies on: the
// records of a committed group are in the newest NNNNN.mem file of the spool
// directory, and the syncer is on that file after the sync, through
// memtable rotations. The messages are small enough (under vlogThreshold)
// for Badger to keep them in the memtable log itself.
func TestWALSyncerFollowsBadger(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, "a")
	defer s.Close()
	ctx := context.Background()
	rotations, last := 0, -1
	for round := range 80 { // 80 x 400 messages of ~450 bytes: several 4 MiB memtables
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Go(func() {
				for i := range 50 {
					n := round*400 + w*50 + i
					raw := fmt.Appendf(msg(n), "WALMARK%06d%s", n, bytes.Repeat([]byte("x"), 300))
					if len(raw) >= vlogThreshold {
						errs <- fmt.Errorf("message of %d bytes would go to the value log", len(raw))
						return
					}
					if _, err := s.Append(ctx, Entry{Source: "src", Raw: raw, Dests: []string{"a"}}); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		// The round's last message, alone after the others: its record is
		// in the newest memtable log whatever the order the rest came in.
		n := 1_000_000 + round
		marker := fmt.Sprintf("WALMARK%06d", n)
		if _, err := s.Append(ctx, Entry{Source: "src", Raw: append(msg(n), marker...), Dests: []string{"a"}}); err != nil {
			t.Fatal(err)
		}
		// A checkpoint syncs the memtable logs like this.
		s.syncMu.Lock()
		err := s.syncFiles(false)
		s.syncMu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		fid := s.mem.fid
		fids, err := logFiles(dir, walExt)
		if err != nil {
			t.Fatal(err)
		}
		if newest := fids[len(fids)-1].fid; fid != newest {
			t.Fatalf("after round %d the syncer is on log %d, the newest is %d", round, fid, newest)
		}
		body, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%05d.mem", fid)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(body, []byte(marker)) {
			t.Fatalf("message %d is not in memtable log %05d.mem: Badger no longer writes where the syncer syncs", n, fid)
		}
		if last >= 0 && fid != last {
			rotations++
		}
		last = fid
	}
	if rotations < 2 {
		t.Fatalf("only %d memtable rotations in 80 rounds: the test no longer covers rotation", rotations)
	}
}

// TestWALSyncerWalksEveryNewLog: logs created since the last sync are all
// synced and the newest is kept; a log removed in between is stepped over.
func TestWALSyncerWalksEveryNewLog(t *testing.T) {
	dir := t.TempDir()
	touch := func(fid int) {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%05d.mem", fid)), []byte("wal"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	touch(3)
	w := newLogSyncer(dir, walExt, fdatasync)
	defer w.close()
	if err := w.syncAll(); err != nil || w.fid != 3 {
		t.Fatalf("first sync: fid %d, err %v", w.fid, err)
	}
	touch(4)
	touch(5)
	if err := os.Remove(filepath.Join(dir, "00003.mem")); err != nil {
		t.Fatal(err)
	}
	if err := w.syncAll(); err != nil || w.fid != 5 {
		t.Fatalf("after two rotations: fid %d, err %v; want 5", w.fid, err)
	}
	for _, f := range []string{"00004.mem", "00005.mem"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.syncAll(); err == nil {
		t.Fatal("sync with no memtable log at all succeeded; it must say the directory was changed")
	}
}
