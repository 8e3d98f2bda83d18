package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/build/skipnote"
)

// cardImageBytes is the loop device's size: room for what a 10-minute run
// keeps with retention on (large reports included) or queues flat out, and sparse, so the
// host only stores what is written.
const cardImageBytes = 16 << 30

// needCardTools skips the campaign, with a note for the summary `make
// cardwear` prints, when loop devices cannot be set up here.
func needCardTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipnote.Unmet(t, "the card-wear measurement", "it needs root (loop devices and mount)",
			`run it as root: sudo env "PATH=$PATH" make cardwear`)
	}
	for _, tool := range []struct{ name, debian string }{{"losetup", "mount"}, {"mkfs.ext4", "e2fsprogs"}, {"mount", "mount"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			skipnote.Missing(t, "the card-wear measurement", tool.name, tool.debian)
		}
	}
}

// cardFS is a fresh ext4 on its own loop device, mounted at Dir: the
// spool alone on it, so the device's counters hold nothing else.
type cardFS struct {
	Dev string // "loop3"
	Dir string
}

// mountCardFS makes the file system as a Pi's root is made (4 KiB blocks,
// journal on, mounted noatime) with the inode tables and journal written
// at mkfs time: ext4's lazy init would otherwise write them from a kernel
// thread during the measurement. Everything is undone in t.Cleanup, also
// when the test fails half-way.
func mountCardFS(t *testing.T) cardFS {
	t.Helper()
	work := t.TempDir() // removed after the unmount below: cleanups run last-in first-out
	img := filepath.Join(work, "card.img")
	run(t, "truncate", "-s", strconv.Itoa(cardImageBytes), img)
	run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", img)
	dev := strings.TrimSpace(run(t, "losetup", "-f", "--show", img))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	dir := filepath.Join(work, "card")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "-t", "ext4", "-o", "noatime", dev, dir)
	t.Cleanup(func() { unmount(t, dir) })
	return cardFS{Dev: filepath.Base(dev), Dir: dir}
}

// unmount retries for a while: a daemon killed a moment ago may still
// hold files open.
func unmount(t *testing.T, dir string) {
	var out []byte
	var err error
	for range 50 {
		if out, err = exec.Command("umount", dir).CombinedOutput(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("umount %s: %v: %s", dir, err, out)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// devCounters are the block device's write counters since it was set up
// (/sys/block/<dev>/stat, the kernel's Documentation/block/stat.rst):
// field 5 write I/Os, field 7 sectors written (512 bytes each), field 16
// flush I/Os (fields 12-15 are discards).
type devCounters struct {
	WriteIOs, Sectors, Flushes int64
}

func readDevCounters(t *testing.T, dev string) devCounters {
	t.Helper()
	path := "/sys/block/" + dev + "/stat"
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(raw))
	if len(f) < 17 {
		t.Fatalf("%s has %d fields, want 17 (a kernel of 5.5 or later counts flushes)", path, len(f))
	}
	n := func(i int) int64 {
		v, err := strconv.ParseInt(f[i-1], 10, 64)
		if err != nil {
			t.Fatalf("%s field %d: %v", path, i, err)
		}
		return v
	}
	return devCounters{WriteIOs: n(5), Sectors: n(7), Flushes: n(16)}
}

// journalCounters are jbd2's totals for the file system's journal
// (/proc/fs/jbd2/<dev>-8/info): the transactions committed and the
// average number of blocks each wrote to the journal, an integer.
type journalCounters struct {
	Transactions, LoggedPerTx int64
}

func readJournal(dev string) journalCounters {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/fs/jbd2/%s-8/info", dev))
	if err != nil {
		return journalCounters{}
	}
	var j journalCounters
	for line := range strings.SplitSeq(string(raw), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 1 && f[1] == "transactions":
			j.Transactions, _ = strconv.ParseInt(f[0], 10, 64)
		case len(f) == 5 && strings.Join(f[1:], " ") == "logged blocks per transaction":
			j.LoggedPerTx, _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return j
}
