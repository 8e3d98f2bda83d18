package fileout

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/storage/syncgate"
)

func TestDeliverWritesOneFilePerGUIDAtomically(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	o, err := New(Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &flow.Message{GUID: "6f1c7a52-3b0e-4c1e-9d59-2f3c1d7e8a90", Raw: []byte("MSH|^~\\&|A\rPID|1\r")}
	for range 2 { // a redelivery rewrites the same file
		if err := o.Deliver(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != m.GUID+".hl7" {
		t.Fatalf("directory holds %v", ents)
	}
	b, _ := os.ReadFile(filepath.Join(dir, ents[0].Name()))
	if string(b) != string(m.Raw) {
		t.Fatalf("file holds %q", b)
	}
}

func TestDeliverFailsWhenDirectoryGone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	o, err := New(Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(dir)
	if err := o.Deliver(context.Background(), &flow.Message{GUID: "g", Raw: []byte("x")}); err == nil {
		t.Fatal("delivery into a missing directory reported success")
	}
	if err := (&Config{}).Validate(); err == nil {
		t.Fatal("empty dir validated")
	}
}

// A cut between write and rename leaves a .tmp-* file holding message content;
// the next start must remove it (found by the power-cut rig: 9 files in 25 cuts).
func TestNewRemovesInterruptedWrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(dir, "6f1c7a52-3b0e-4c1e-9d59-2f3c1d7e8a90.hl7")
	for _, p := range []string{filepath.Join(dir, ".tmp-123456"), filepath.Join(dir, ".tmp-"), keep} {
		if err := os.WriteFile(p, []byte("MSH|^~\\&|A\rPID|1||123^^^H||DOE^JOHN\r"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(Config{Dir: dir}, nil); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != filepath.Base(keep) {
		t.Fatalf("after start the directory holds %v, want only the delivered message", ents)
	}
}

func TestDeliverBatchWritesEveryFileAndNoTemporaries(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	o, err := New(Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ms []*flow.Message
	for i := range 5 {
		ms = append(ms, &flow.Message{GUID: fmt.Sprintf("6f1c7a52-3b0e-4c1e-9d59-2f3c1d7e8a9%d", i), Raw: fmt.Appendf(nil, "MSH|^~\\&|A\rPID|%d\r", i)})
	}
	for range 2 { // a redelivered batch rewrites the same files
		if err := o.DeliverBatch(context.Background(), ms); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != len(ms) {
		t.Fatalf("directory holds %v, want the %d messages only", ents, len(ms))
	}
	for _, m := range ms {
		b, err := os.ReadFile(filepath.Join(dir, m.GUID+".hl7"))
		if err != nil || string(b) != string(m.Raw) {
			t.Fatalf("%s.hl7 holds %q (%v), want %q", m.GUID, b, err, m.Raw)
		}
	}
}

// A batch that fails part way leaves no temporary file holding message
// content behind, and reports the failure so nothing is marked delivered.
func TestDeliverBatchFailureLeavesNoTemporaries(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	o, err := New(Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The second message's final name is taken by a non-empty directory,
	// so its rename fails after both temporaries were written.
	if err := os.MkdirAll(filepath.Join(dir, "b.hl7", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	ms := []*flow.Message{{GUID: "a", Raw: []byte("MSH|1\r")}, {GUID: "b", Raw: []byte("MSH|2\r")}, {GUID: "c", Raw: []byte("MSH|3\r")}}
	if err := o.DeliverBatch(context.Background(), ms); err == nil {
		t.Fatal("a batch whose rename failed reported success")
	}
	left, _ := filepath.Glob(filepath.Join(dir, tmpPattern))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// outputBesideTheSpool is a file destination in dir on the spool's file
// system, and the gate it shares with the spool.
func outputBesideTheSpool(t *testing.T) (*Output, *syncgate.Gate, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "out")
	gates := syncgate.NewGates()
	gate, err := gates.For(dir) // the spool's
	if err != nil {
		t.Fatal(err)
	}
	o, err := New(Config{Dir: dir}, gates)
	if err != nil {
		t.Fatal(err)
	}
	return o, gate, dir
}

// The power-cut rig's EIO campaign (run 4) lost a message this way: the
// spool's flush failed while this destination's file sat unsynced in the
// card's cache, the card dropped both, and the file's own sync then
// "succeeded" and the message was counted delivered. A delivery whose
// writes overlap a failed sync on the spool's file system must fail, to
// be written again; both ways of delivering.
func TestDeliveryOverlappingAFailedSyncElsewhereIsWrittenAgain(t *testing.T) {
	o, gate, dir := outputBesideTheSpool(t)
	spoolFlushFails := func() { _ = gate.Sync(gate.Epoch(), func() error { return syscall.EIO }) }
	m := &flow.Message{GUID: "0b7e3a52-3b0e-4c1e-9d59-2f3c1d7e8a90", Raw: []byte("MSH|^~\\&|A\rPID|1\r")}
	deliveries := map[string]func() error{
		"Deliver":      func() error { return o.Deliver(context.Background(), m) },
		"DeliverBatch": func() error { return o.DeliverBatch(context.Background(), []*flow.Message{m}) },
	}
	for name, deliver := range deliveries {
		o.written = spoolFlushFails
		err := deliver()
		if !errors.Is(err, syncgate.ErrFailedSince) {
			t.Fatalf("%s across the spool's failed flush: %v, want ErrFailedSince (else it is counted delivered)", name, err)
		}
		if !errors.Is(err, flow.ErrNotAttempted) {
			t.Fatalf("%s across the spool's failed flush: %v, not marked flow.ErrNotAttempted (max_attempts would count it)", name, err)
		}
		o.written = nil
		if err := deliver(); err != nil {
			t.Fatalf("%s again: %v", name, err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, m.GUID+".hl7")); err != nil || string(b) != string(m.Raw) {
			t.Fatalf("%s again: the file holds %q (%v)", name, b, err)
		}
	}
}

func TestGateOfAnotherFileSystemIsNotUsed(t *testing.T) {
	gates := syncgate.NewGates()
	spoolGate, err := gates.For(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o, err := New(Config{Dir: filepath.Join(otherFileSystem(t), "out")}, gates)
	if err != nil {
		t.Fatal(err)
	}
	if o.gate == spoolGate || o.gate == nil {
		t.Fatal("a file destination on another file system shares the spool's gate (its failures would fault the spool) or has none")
	}
}

// Only a failed flush may cost the other writers on the file system their
// writes. An error that reached no disk (the directory cannot be opened:
// moved away, no read permission on a drop-box directory, no file
// descriptor left) must not move the gate's epoch: every such delivery,
// retried, would fault the spool and answer AE to every sender.
func TestAnErrorBeforeTheFlushDoesNotFailTheOtherWriters(t *testing.T) {
	o, gate, dir := outputBesideTheSpool(t)
	o.written = func() {
		if err := os.Rename(dir, dir+".moved"); err != nil {
			t.Fatal(err)
		}
	}
	m := &flow.Message{GUID: "0b7e3a52-3b0e-4c1e-9d59-2f3c1d7e8a90", Raw: []byte("MSH|^~\\&|A\rPID|1\r")}
	before := gate.Epoch()
	if err := o.DeliverBatch(context.Background(), []*flow.Message{m}); err == nil {
		t.Fatal("a batch into a directory moved away was delivered")
	}
	if gate.Epoch() != before {
		t.Fatal("a directory that could not be opened counted as a failed flush: the spool faults and answers AE")
	}
}

// Two file destinations on one file system that is not the spool's (a
// USB stick) lose each other's unsynced files to a failed flush just as
// they would the spool's: the second must not be told its file is
// durable after the first's flush failed.
func TestDestinationsOnAnotherFileSystemShareItsGate(t *testing.T) {
	other := otherFileSystem(t)
	gates := syncgate.NewGates()
	if _, err := gates.For(t.TempDir()); err != nil { // the spool's
		t.Fatal(err)
	}
	a, err := New(Config{Dir: filepath.Join(other, "a")}, gates)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Dir: filepath.Join(other, "b")}, gates)
	if err != nil {
		t.Fatal(err)
	}
	b.written = func() { _ = a.gated(a.gate.Epoch(), func() error { return syscall.EIO }) } // a's flush fails
	m := &flow.Message{GUID: "0b7e3a52-3b0e-4c1e-9d59-2f3c1d7e8a90", Raw: []byte("MSH|^~\\&|A\rPID|1\r")}
	if err := b.Deliver(context.Background(), m); !errors.Is(err, syncgate.ErrFailedSince) {
		t.Fatalf("a delivery across another destination's failed flush on its file system: %v, want ErrFailedSince (else it is counted delivered)", err)
	}
}

// otherFileSystem is a directory on a file system other than the test's
// temporary directory's (/dev/shm), or skips the test.
func otherFileSystem(t *testing.T) string {
	t.Helper()
	var tmp, shm syscall.Stat_t
	if syscall.Stat(t.TempDir(), &tmp) != nil || syscall.Stat("/dev/shm", &shm) != nil || tmp.Dev == shm.Dev {
		t.Skip("no second file system (/dev/shm) here")
	}
	dir, err := os.MkdirTemp("/dev/shm", "fileout-test-")
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// New syncs the directory that holds a destination directory it made, and
// the directory once it removed interrupted writes. Those are flushes on
// the card like any delivery's, so they wait for the gate: beside another
// writer's flush, a failure of either would reach only its own caller.
func TestNewSyncsThroughTheGate(t *testing.T) {
	parent := t.TempDir()
	gates := syncgate.NewGates()
	gate, err := gates.For(parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		setup func(dir string)
	}{
		{"a directory made now", func(string) {}},
		{"interrupted writes removed", func(dir string) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, ".tmp-left"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		dir := filepath.Join(parent, strings.ReplaceAll(c.name, " ", "-"))
		c.setup(dir)
		held, release, other := make(chan struct{}), make(chan struct{}), make(chan error, 1)
		go func() { other <- gate.Sync(gate.Epoch(), func() error { close(held); <-release; return nil }) }()
		<-held
		made := make(chan error, 1)
		go func() { _, err := New(Config{Dir: dir}, gates); made <- err }()
		select {
		case err := <-made:
			close(release)
			<-other
			t.Fatalf("%s: New returned (%v) while another writer's flush held the gate: its directory sync ran beside it", c.name, err)
		case <-time.After(2 * time.Second):
		}
		close(release)
		if err := <-other; err != nil {
			t.Fatal(err)
		}
		if err := <-made; err != nil {
			t.Fatalf("%s: New: %v", c.name, err)
		}
	}
}
