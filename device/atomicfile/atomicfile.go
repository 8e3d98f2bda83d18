// Package atomicfile replaces small state files so that a power cut or a
// SIGKILL leaves either the old content or the new, never a mix or nothing:
// write a temporary file in the same directory, fsync it, rename it over the
// old one, fsync the directory.
//
// The state files live on the card beside the spool, and a card that fails
// a cache flush drops every unsynced write on it while only the writer that
// asked for the flush hears of it (docs/power-loss.md). So both fsyncs run
// through the gate of the file's file system (storage/syncgate): a failure
// of another writer's sync since the write began refuses the write and
// leaves the old file, and a failure of its own tells the others.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// Write replaces path with data, with permissions perm, its syncs through
// the gate gates hold for path's file system (nil gates: a process alone on
// its file system, such as a command-line tool).
//
// When another writer's sync failed after Write began, the error wraps
// syncgate.ErrFailedSince: the temporary file may be gone from the card, so
// it is removed and the old file stays. Writing again is safe and notes the
// gate anew. A failure after the rename (the directory's sync) leaves the
// new content in place, not known to be durable.
func Write(gates *syncgate.Gates, path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	gate, err := gates.For(dir)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	since := gate.Epoch() // before the first byte: the card may drop any of them
	if err := replace(gate, since, path, data, perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(gate, since, dir)
}

// replace writes the temporary file, syncs it through gate and renames it
// over path; on failure it removes the temporary file.
func replace(gate *syncgate.Gate, since uint64, path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = gate.Sync(since, f.Sync)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// SyncDir makes a rename or a new file in dir durable, through gate for
// writes begun in its epoch since (a nil gate: alone on the file system).
// The directory is opened and closed outside the gate: only the flush's own
// failure may fail the other writers.
func SyncDir(gate *syncgate.Gate, since uint64, dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	err = gate.Sync(since, d.Sync)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Remove deletes path, if it is there, and makes the removal durable
// through the gate of its file system: a state file whose removal a power
// cut could undo would come back and be acted on again.
func Remove(gates *syncgate.Gates, path string) error {
	dir := filepath.Dir(path)
	gate, err := gates.For(dir)
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	since := gate.Epoch()
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return SyncDir(gate, since, dir)
}
