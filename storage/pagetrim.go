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

// tableTrimmer drops this process's view of the spool's table pages.
//
// Badger writes each table through a shared memory map and keeps it mapped
// while the table lives, so every page of every table stays counted in the
// daemon's resident memory: 17 MiB with 100,000 messages queued, growing
// with the queue. Those pages are the kernel's file cache, not memory the
// daemon needs, but a fleet operator reading RSS cannot tell, and mapped
// cache is harder for the kernel to reclaim than unmapped cache on a 1 GB
// board.
//
// MADV_DONTNEED on a shared file mapping only unmaps: a dirty page's data
// goes to the page cache, which writes it back as usual, and the next read
// maps the same page again from the cache (a minor fault, no disk read
// while the kernel keeps it). Badger is never told and sees no difference.
// Only read-only-by-then table files (*.sst) are trimmed; the memtable logs
// are being written and would fault on every write.
type tableTrimmer struct {
	dir string // absolute, symlinks resolved, as /proc/self/maps shows it
}

func newTableTrimmer(dir string) tableTrimmer {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	return tableTrimmer{dir: dir}
}

// trim unmaps the resident pages of every table mapping and returns how
// many bytes of mappings it covered.
func (t tableTrimmer) trim() (int64, error) {
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
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_DONTNEED); errno != 0 {
			return covered, fmt.Errorf("madvise a spool table mapping: %w", errno)
		}
		covered += int64(end - start)
	}
	return covered, sc.Err()
}

// tableMapping parses one /proc/self/maps line ("start-end perms offset dev
// inode path") and says whether it maps a table file of this spool.
func (t tableTrimmer) tableMapping(line string) (start, end uintptr, ok bool) {
	f := strings.Fields(line)
	if len(f) < 6 || !strings.Contains(line, "/") {
		return 0, 0, false
	}
	// The path is the rest of the line from its first slash (no earlier
	// field holds one) and may hold spaces.
	path := strings.TrimSpace(line[strings.IndexByte(line, '/'):])
	if filepath.Dir(path) != t.dir || !strings.HasSuffix(path, ".sst") {
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
