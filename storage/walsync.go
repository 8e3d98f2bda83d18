package storage

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hl7edge/hl7edge/storage/commitlog"
)

// logSyncer makes what Badger appended to one kind of its numbered log files
// durable by syncing them itself: the memtable write-ahead logs (NNNNN.mem)
// after every group commit, and the value logs (NNNNNN.vlog) where a value
// of largeValue or more was written.
//
// Why not badger.DB.Sync, for the promise that an ACK survives a power cut:
//
//   - DB.Sync syncs only the memtable and the value-log file that are
//     current when it runs. Another writer (a delivery mark, counters) can
//     fill the memtable between our commit and the sync, and a large value
//     can fill a value-log file; Badger then starts a new one, and the
//     group's records sit in the previous file, unsynced. The syncer walks
//     every file from the one it synced last to the newest, so a rotation in
//     between is covered.
//   - DB.Sync syncs both kinds each time, and an fsync of a file with
//     nothing dirty still costs a disk cache flush on ext4. Most messages
//     are stored inline, so that second flush bought nothing and halved
//     what one lockstep sender could get through.
//   - It uses fdatasync, not fsync. Badger writes both logs through a memory
//     map, which moves the file's modification time with every write; fsync
//     then commits a journal transaction for the time stamp alone, where
//     fdatasync writes the data and only the metadata needed to read it back
//     (block allocation, size). The time stamps are read by nothing.
//
// It relies on Badger numbering each kind of log with increasing numbers
// (memtable.go: "%05d.mem", value.go: "%06d.vlog");
// TestWALSyncerFollowsBadger holds Badger to that on every build.
type logSyncer struct {
	dir  string
	ext  string
	fid  int      // number of the file f is open on; 0 before the first sync
	f    *os.File // the newest file synced so far
	sync func(*os.File) error
}

const (
	walExt  = ".mem"
	vlogExt = ".vlog"
)

func newLogSyncer(dir, ext string, sync func(*os.File) error) logSyncer {
	return logSyncer{dir: dir, ext: ext, sync: sync}
}

// logFile is one numbered log file in the spool directory.
type logFile struct {
	fid  int
	name string
}

// logFiles lists dir's logs of one kind.
func logFiles(dir, ext string) ([]logFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []logFile
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ext); ok {
			if fid, err := strconv.Atoi(n); err == nil {
				out = append(out, logFile{fid: fid, name: e.Name()})
			}
		}
	}
	// By number, not by name: the names are zero-padded only to a width,
	// so 100000.mem sorts before 99999.mem.
	slices.SortFunc(out, func(a, b logFile) int { return cmp.Compare(a.fid, b.fid) })
	return out, nil
}

// syncAll makes everything written to any log of its kind so far durable.
// Every file from the last one it synced to the newest is synced: those are
// the only ones that can hold writes made since. A file that has
// disappeared was flushed into a table Badger had synced (or cleaned up),
// and removed.
//
// Listing the directory each time costs a few microseconds against an
// fsync's hundreds, and needs no guess about how Badger rotates.
func (w *logSyncer) syncAll() error {
	files, err := logFiles(w.dir, w.ext)
	if err != nil {
		return fmt.Errorf("list %s files in %s: %w", w.ext, w.dir, err)
	}
	if len(files) == 0 && w.ext == walExt {
		return fmt.Errorf("no memtable log (*%s) in %s: the spool directory was changed behind the daemon's back; restart it", walExt, w.dir)
	}
	for _, lf := range files {
		if lf.fid < w.fid {
			continue
		}
		if lf.fid != w.fid || w.f == nil {
			f, err := os.OpenFile(filepath.Join(w.dir, lf.name), os.O_RDWR, 0)
			if errors.Is(err, fs.ErrNotExist) {
				continue // flushed and removed since the listing
			}
			if err != nil {
				return fmt.Errorf("open %s: %w", lf.name, err)
			}
			if w.f != nil {
				_ = w.f.Close()
			}
			w.fid, w.f = lf.fid, f
		}
		if err := w.sync(w.f); err != nil {
			return fmt.Errorf("sync %s: %w", w.f.Name(), err)
		}
	}
	return nil
}

// fdatasync is the spool's data sync (commitlog.Fdatasync).
func fdatasync(f *os.File) error { return commitlog.Fdatasync(f) }

func (w *logSyncer) close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f, w.fid = nil, 0
	return err
}
