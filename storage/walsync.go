package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// walSyncer makes a committed group durable by syncing Badger's memtable
// write-ahead logs (the NNNNN.mem files in the spool directory) itself,
// instead of calling badger.DB.Sync.
//
// Two reasons, both about the promise that an ACK survives a power cut:
//
//   - DB.Sync syncs only the memtable that is current when it runs. Another
//     writer (a delivery mark, counters) can fill the memtable between our
//     commit and the sync; Badger then starts a new one, and the group's
//     records sit in the previous log, unsynced, until the background flush
//     turns them into a table. The syncer walks every log from the one it
//     synced last to the newest, so a rotation in between is covered.
//   - DB.Sync also syncs the value log, and an fsync of a file with nothing
//     dirty still costs a disk cache flush on ext4. Messages are stored
//     inline (below the value threshold), so that second flush bought
//     nothing and halved what one lockstep sender could get through.
//     Groups that did put a value in the value log still call DB.Sync.
//   - It uses fdatasync, not fsync. Badger writes the log through a memory
//     map, which moves the file's modification time with every write; fsync
//     then commits a journal transaction for the time stamp alone, where
//     fdatasync writes the data and only the metadata needed to read it back
//     (block allocation, size). The time stamp of a memtable log is read by
//     nothing.
//
// It relies on Badger naming its memtable logs with increasing numbers
// (memtable.go: "%05d.mem"); TestWALSyncerFollowsBadger holds Badger to
// that on every build.
type walSyncer struct {
	dir string
	fid int      // number of the log f is open on; 0 before the first sync
	f   *os.File // the newest log synced so far
}

const walExt = ".mem"

func (w *walSyncer) path(fid int) string {
	return filepath.Join(w.dir, fmt.Sprintf("%05d%s", fid, walExt))
}

// wals lists the numbers of the memtable logs in dir, lowest first.
func wals(dir string) ([]int, error) {
	ents, err := os.ReadDir(dir) // sorted by name, and the names are zero-padded
	if err != nil {
		return nil, err
	}
	var fids []int
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), walExt); ok {
			if fid, err := strconv.Atoi(n); err == nil {
				fids = append(fids, fid)
			}
		}
	}
	return fids, nil
}

// sync makes everything committed to any memtable log so far durable. Every
// log from the last one it synced to the newest is synced: those are the
// only ones that can hold writes made since. A log that has disappeared was
// flushed into a table Badger had synced, and removed.
//
// Listing the directory each time costs a few microseconds against an
// fsync's hundreds, and needs no guess about how Badger rotates.
func (w *walSyncer) sync() error {
	fids, err := wals(w.dir)
	if err != nil {
		return fmt.Errorf("list memtable logs in %s: %w", w.dir, err)
	}
	if len(fids) == 0 {
		return fmt.Errorf("no memtable log (*%s) in %s: the spool directory was changed behind the daemon's back; restart it", walExt, w.dir)
	}
	for _, fid := range fids {
		if fid < w.fid {
			continue
		}
		if fid != w.fid || w.f == nil {
			f, err := os.OpenFile(w.path(fid), os.O_RDWR, 0)
			if errors.Is(err, fs.ErrNotExist) {
				continue // flushed and removed since the listing
			}
			if err != nil {
				return fmt.Errorf("open memtable log: %w", err)
			}
			if w.f != nil {
				_ = w.f.Close()
			}
			w.fid, w.f = fid, f
		}
		if err := fdatasync(w.f); err != nil {
			return fmt.Errorf("sync %s: %w", w.f.Name(), err)
		}
	}
	return nil
}

// fdatasync makes f's data durable with the metadata needed to read it
// back, but not its time stamps.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

func (w *walSyncer) close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}
