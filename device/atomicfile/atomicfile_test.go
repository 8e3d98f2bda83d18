package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hl7edge/hl7edge/storage/syncgate"
	"github.com/hl7edge/hl7edge/storage/syncgate/syncgatetest"
)

// A card that fails a flush drops every unsynced write on it, the temporary
// file's too, but only the writer that asked for the flush hears of it. If
// another writer's flush fails after Write began, Write must not trust its
// own later fsync: it refuses and the old file stays.
func TestWriteRefusedWhenAnotherSyncFailedMeanwhile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	if err := os.WriteFile(path, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gates := syncgate.NewGates()
	gate, err := gates.For(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The spool's flush is under way, and fails once Write has written its
	// temporary file.
	err = syncgatetest.FailMeanwhile(t, gate, filepath.Join(dir, ".state.tmp-*"), func() error {
		return Write(gates, path, []byte("new\n"), 0o600)
	})
	if !errors.Is(err, syncgate.ErrFailedSince) {
		t.Fatalf("Write after another writer's sync failed meanwhile = %v, want ErrFailedSince", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old\n" {
		t.Fatalf("the file holds %q after a refused write, want the old content", b)
	}
	if left := temps(t, dir); len(left) != 0 {
		t.Fatalf("a refused write left %v behind", left)
	}
	// Written again, it is the failure's own epoch that it notes: it succeeds.
	if err := Write(gates, path, []byte("new\n"), 0o600); err != nil {
		t.Fatalf("Write again: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new\n" {
		t.Fatalf("the file holds %q, want the new content", b)
	}
}

func temps(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Remove deletes the file and is content when it is already gone: a state
// file is removed once what it records is over, perhaps twice.
func TestRemove(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	if err := Write(nil, path, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gates := syncgate.NewGates()
	if err := Remove(gates, path); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Remove: stat %v, want not there", err)
	}
	if err := Remove(gates, path); err != nil {
		t.Fatalf("Remove of a file already gone: %v", err)
	}
	if err := Remove(gates, filepath.Join(dir, "no such dir", "state")); err == nil {
		t.Fatal("Remove in a directory that is not there: nil, want the directory's sync to fail")
	}
}
