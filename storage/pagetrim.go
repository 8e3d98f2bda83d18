package storage

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// tableTrimmer hands the spool's table pages back to the kernel.
//
// Badger writes each table through a shared memory map and keeps it mapped
// while the table lives, so every page of every table it has written or
// read stays counted in the daemon's resident memory: 17 to 35 MiB with
// 100,000 messages queued, growing with the queue, on a board whose whole
// budget is 64 MiB. Those pages are only a copy of the files, but mapped
// pages are the last the kernel reclaims, and a fleet operator reading RSS
// cannot tell them from memory the daemon needs.
//
// MADV_PAGEOUT asks the kernel to reclaim them now: clean pages leave the
// page cache, dirty ones are written back first, and the next read maps
// them again from the file. It can never lose data, whatever the range
// holds; that matters because Badger unmaps tables at any moment, and the
// address range read from /proc/self/maps may by then belong to another
// mapping, even the Go heap, where MADV_DONTNEED (unmap, keep the cache)
// would zero live memory. Table files (*.sst) and value logs (*.vlog,
// where message bodies are written, through a map too, and read back by
// deliveries) are named; the memtable logs are rewritten in place and
// would only be faulted in again. A value log's pages not yet written back
// are written first, as the kernel would within 30 seconds anyway. The
// price is that a page read again (by a compaction or a delivery) comes
// from the disk rather than the cache: in BenchmarkIngest that cost no
// measurable throughput.
type tableTrimmer struct {
	dir   string // absolute, symlinks resolved, as /proc/self/maps shows it
	floor int64  // file-backed resident bytes at their lowest since the last trim
}

// trimSlack is how far the process's mapped file pages may grow before the
// table pages among them are handed back.
const trimSlack = 4 << 20

func newTableTrimmer(dir string) *tableTrimmer {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	return &tableTrimmer{dir: dir}
}

// maybeTrim trims once the mapped file pages have grown by trimSlack.
func (t *tableTrimmer) maybeTrim() error {
	shared, err := residentShared()
	if err != nil {
		return err
	}
	// Other mappings shrink too (a flushed memtable log goes away); the
	// slack counts from the lowest point since the last trim.
	t.floor = min(t.floor, shared)
	if shared < t.floor+trimSlack {
		return nil
	}
	if _, err := t.trim(); err != nil {
		return err
	}
	t.floor, err = residentShared()
	return err
}

// residentShared is this process's resident file-backed (and shared)
// memory in bytes: the third field of /proc/self/statm, in pages.
func residentShared() (int64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, fmt.Errorf("read /proc/self/statm: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, fmt.Errorf("/proc/self/statm has %d fields, want 7", len(f))
	}
	pages, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/self/statm: %w", err)
	}
	return pages * int64(os.Getpagesize()), nil
}

// trim hands back the resident pages of every table mapping and returns
// how many bytes of mappings it covered.
func (t *tableTrimmer) trim() (int64, error) {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("read /proc/self/maps to trim spool table pages: %w", err)
	}
	var covered int64
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		start, end, ok := t.tableMapping(sc.Text())
		if !ok {
			continue
		}
		if err := pageOut(start, end); err != nil {
			return covered, err
		}
		covered += int64(end - start)
	}
	return covered, sc.Err()
}

// tableMapping parses one /proc/self/maps line ("start-end perms offset dev
// inode path") and says whether it maps a table file of this spool.
func (t *tableTrimmer) tableMapping(line string) (start, end uintptr, ok bool) {
	f := strings.Fields(line)
	if len(f) < 6 || !strings.Contains(line, "/") {
		return 0, 0, false
	}
	// The path is the rest of the line from its first slash (no earlier
	// field holds one) and may hold spaces.
	path := strings.TrimSpace(line[strings.IndexByte(line, '/'):])
	if filepath.Dir(path) != t.dir || !(strings.HasSuffix(path, ".sst") || strings.HasSuffix(path, vlogExt)) {
		return 0, 0, false
	}
	lo, hi, found := strings.Cut(f[0], "-")
	if !found {
		return 0, 0, false
	}
	a, err1 := strconv.ParseUint(lo, 16, 64)
	b, err2 := strconv.ParseUint(hi, 16, 64)
	if err1 != nil || err2 != nil || b <= a {
		return 0, 0, false
	}
	return uintptr(a), uintptr(b), true
}

// pageOut asks the kernel to reclaim the pages of [start, end). A range
// that is no longer mapped (Badger dropped the table since the map was
// read) is not an error.
func pageOut(start, end uintptr) error {
	_, _, errno := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_PAGEOUT)
	switch errno {
	case 0, unix.ENOMEM:
		return nil
	case unix.EINVAL:
		return fmt.Errorf("madvise(MADV_PAGEOUT) on a spool table: %w (the kernel is older than Linux 5.4)", errno)
	}
	return fmt.Errorf("madvise(MADV_PAGEOUT) on a spool table: %w", errno)
}
