package storage

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"unsafe"

	"golang.org/x/sys/unix"
)

// mappedFile maps a new file of n bytes in dir, shared and writable, as
// Badger maps its tables, fills it and syncs it.
func mappedFile(t *testing.T, dir, name string, n int) []byte {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(n)); err != nil {
		t.Fatal(err)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Munmap(data) })
	for i := range data {
		data[i] = byte(i * 7)
	}
	// Badger syncs a table once it is built, so its pages are clean when the
	// trimmer meets them. Dirty ones would only be queued for write-back by
	// MADV_PAGEOUT and could still be resident when the test looks.
	if err := unix.Msync(data, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	return data
}

// residentKB sums the Rss of this process's mappings of path.
func residentKB(t *testing.T, path string) int64 {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var kb int64
	in := false
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = strings.HasSuffix(line, " "+path)
			continue
		}
		if in && strings.HasPrefix(line, "Rss:") {
			n, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			kb += n
		}
	}
	return kb
}

// leftBehindKB is what MADV_PAGEOUT may leave of a trimmed mapping: two
// CPUs' batches of pages not yet on an LRU list, rounded up.
const leftBehindKB = 128

func TestTableTrimmerUnmapsOnlyTablePages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool with space")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	table := mappedFile(t, dir, "000001.sst", size)
	wal := mappedFile(t, dir, "00002.mem", size)
	tablePath, walPath := filepath.Join(dir, "000001.sst"), filepath.Join(dir, "00002.mem")
	if kb := residentKB(t, tablePath); kb < size>>10 {
		t.Fatalf("the table mapping holds %d KiB before trimming, want %d", kb, size>>10)
	}

	covered, err := newTableTrimmer(dir).trim()
	if err != nil {
		t.Fatal(err)
	}
	if covered != size {
		t.Errorf("trim covered %d bytes of mappings, want the table's %d", covered, size)
	}
	// MADV_PAGEOUT skips pages that are not on an LRU list yet: the last
	// few faulted on another CPU still wait in that CPU's batch (15 pages
	// each). Under load one run kept 32 KiB of the 1 MiB. Untrimmed, all of
	// it stays.
	if kb := residentKB(t, tablePath); kb > leftBehindKB {
		t.Errorf("the table mapping still holds %d KiB of %d after trimming, want at most %d", kb, size>>10, leftBehindKB)
	}
	if kb := residentKB(t, walPath); kb < size>>10 {
		t.Errorf("the memtable log lost its pages (%d KiB left): it is being written and must stay mapped", kb)
	}
	// Nothing is lost: written pages reach the file and the mapping reads
	// them back.
	onDisk, err := os.ReadFile(tablePath)
	if err != nil {
		t.Fatal(err)
	}
	for i := range size {
		if table[i] != byte(i*7) || onDisk[i] != byte(i*7) {
			t.Fatalf("byte %d reads %d through the mapping and %d from the file after trimming, want %d", i, table[i], onDisk[i], byte(i*7))
		}
	}
	_ = wal
}

func TestTableMappingParsesMaps(t *testing.T) {
	tr := &tableTrimmer{dir: "/var/lib/hl7edge/my spool"}
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"7f0000000000-7f0000100000 rw-s 00000000 fd:01 1234 /var/lib/hl7edge/my spool/000001.sst", true},
		{"7f0000000000-7f0000100000 rw-s 00000000 fd:01 1234 /var/lib/hl7edge/my spool/00001.mem", false},
		{"7f0000000000-7f0000100000 rw-s 00000000 fd:01 1234 /var/lib/hl7edge/other/000001.sst", false},
		{"7f0000000000-7f0000100000 rw-s 00000000 fd:01 1234 /var/lib/hl7edge/my spool/000001.sst (deleted)", false},
		{"7f0000000000-7f0000100000 rw-p 00000000 00:00 0 ", false},
		{"7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]", false},
	} {
		start, end, ok := tr.tableMapping(tc.line)
		if ok != tc.want {
			t.Errorf("%q: table mapping %v, want %v", tc.line, ok, tc.want)
		}
		if ok && (start != 0x7f0000000000 || end != 0x7f0000100000) {
			t.Errorf("%q: range %x-%x", tc.line, start, end)
		}
	}
}

// maybeTrim leaves a few mapped pages alone and trims once they add up.
func TestMaybeTrimWaitsForSlack(t *testing.T) {
	dir := t.TempDir()
	tr := newTableTrimmer(dir)
	if err := tr.maybeTrim(); err != nil { // sets the floor
		t.Fatal(err)
	}
	small := filepath.Join(dir, "000001.sst")
	mappedFile(t, dir, "000001.sst", 64<<10)
	if err := tr.maybeTrim(); err != nil {
		t.Fatal(err)
	}
	if kb := residentKB(t, small); kb == 0 {
		t.Fatal("64 KiB of table pages were trimmed: below the slack the map should not be walked")
	}
	mappedFile(t, dir, "000002.sst", 2*trimSlack)
	if err := tr.maybeTrim(); err != nil {
		t.Fatal(err)
	}
	if kb := residentKB(t, small) + residentKB(t, filepath.Join(dir, "000002.sst")); kb > leftBehindKB {
		t.Fatalf("%d KiB of table pages still mapped after they grew past the slack, want at most %d", kb, leftBehindKB)
	}
}

// Badger unmaps tables whenever a compaction ends; a range read from the
// map just before must be passed over quietly.
func TestPageOutSkipsUnmappedRange(t *testing.T) {
	data, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	start := uintptr(unsafe.Pointer(&data[0]))
	if err := unix.Munmap(data); err != nil {
		t.Fatal(err)
	}
	if err := pageOut(start, start+1<<20); err != nil {
		t.Fatalf("page out an unmapped range: %v", err)
	}
}
