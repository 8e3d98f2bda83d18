package firmware

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// Every sync on the card waits while one holds the gate, the spool's too,
// and with it every ACK. An image is up to firmware.max_bytes (128 MiB),
// which an SD card takes seconds to write: the image's pages must reach
// the card before its sync takes the gate, which is then held for the
// flush alone. Here the spool holds the gate; the downloaded image must
// meanwhile be written back (no dirty pages left), not wait dirty behind
// it (the kernel would write it back only after 30 s).
func TestImageWrittenBackBeforeItsSyncWaitsForTheGate(t *testing.T) {
	img := make([]byte, 8<<20)
	_, _ = rand.Read(img)
	rest := make(chan struct{})
	r := newGatedDownload(t, img, 16<<20, func(string) {}, func(*syncgate.Gate) {
		<-rest // the spool takes the gate meanwhile
	})
	m, raw, cfg, gate := r.m, r.raw, r.cfg, r.gate

	updated := make(chan error, 1)
	go func() { _, _, err := m.Update(context.Background(), "c1", raw); updated <- err }()
	tmp := filepath.Join(cfg.Dir, downloadPrefix+"2.0")
	waitFor(t, updated, "the download to begin", func() bool { _, size := pageState(tmp); return size > 0 })
	held, release, spoolDone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		spoolDone <- gate.Sync(gate.Epoch(), func() error { close(held); <-release; return nil })
	}()
	<-held
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	close(rest)
	deadline := time.Now().Add(10 * time.Second)
	for {
		dirty, size := pageState(tmp)
		if size == int64(len(img)) && dirty == 0 {
			break
		}
		select {
		case err := <-updated:
			t.Fatalf("Update ended (%v) while the spool held the gate", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the image (%d of %d bytes) still has %d pages not on the card after 10 s while the spool held the gate: its write-back waits for the gate", size, len(img), dirty)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	released = true
	if err := <-spoolDone; err != nil {
		t.Fatal(err)
	}
	if err := <-updated; err != nil {
		t.Fatalf("Update once the gate was free: %v", err)
	}
}

// waitFor polls done for up to 10 s; Update must not end meanwhile.
func waitFor(t *testing.T, updated <-chan error, what string, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !done() {
		select {
		case err := <-updated:
			t.Fatalf("Update ended (%v) before %s", err, what)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pageState is how many of file's cached pages are dirty or being
// written, and its size; -1 pages while it cannot be read.
func pageState(file string) (pages uint64, size int64) {
	f, err := os.Open(file)
	if err != nil {
		return 1, -1
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 1, -1
	}
	var st unix.Cachestat_t
	if err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{}, &st, 0); err != nil {
		return 1, -1
	}
	return st.Dirty + st.Writeback, fi.Size()
}
