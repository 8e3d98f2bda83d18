package commitlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// slot is one segment file. Files are never removed or grown: when the
// log needs room it reuses the oldest file whose records are no longer
// needed, and makes a new one only when there is none.
type slot struct {
	num  int // from its name, seg-NNNN
	path string
	f    *os.File
	h    header // as last written; seq 0 while unused
}

const slotPrefix = "seg-"

func slotPath(dir string, num int) string {
	return filepath.Join(dir, fmt.Sprintf("%s%04d", slotPrefix, num))
}

func slotNum(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, slotPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

// ioMode is how a log writes: straight to the device in blocks of align
// bytes (O_DIRECT|O_DSYNC, every write durable when it returns), or
// through the page cache with a data sync after each write.
type ioMode struct {
	direct bool
	align  int64
}

// probeMode asks the file system, for a file in dir, whether direct I/O
// is allowed and at which alignment (statx STATX_DIOALIGN, Linux 6.1 and
// later). ext4 on an SD card allows 512-byte writes: a group commit of one
// lab result then writes two or three sectors instead of a 4 KiB page.
func probeMode(path string, allowDirect bool) ioMode {
	buffered := ioMode{align: 512}
	if !allowDirect {
		return buffered
	}
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_DIOALIGN, &st); err != nil {
		return buffered
	}
	if st.Mask&unix.STATX_DIOALIGN == 0 || st.Dio_offset_align == 0 || st.Dio_mem_align == 0 {
		return buffered
	}
	align := int64(max(st.Dio_offset_align, st.Dio_mem_align))
	if align > headerSize || headerSize%align != 0 {
		return buffered
	}
	return ioMode{direct: true, align: align}
}

func openSlot(path string, m ioMode) (*os.File, error) {
	flags := os.O_RDWR
	if m.direct {
		flags |= unix.O_DIRECT | unix.O_DSYNC
	}
	return os.OpenFile(path, flags, 0o600)
}

// createSlot makes a segment file of size bytes and writes every byte of
// it (zeros), so that the blocks are allocated and written before any
// record goes in: a later overwrite then changes data only, and a data
// sync needs no journal commit. The directory is synced so the file is
// still there after a cut.
func createSlot(path string, size int64, sync func(*os.File) error) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < size && err == nil; off += int64(len(zeros)) {
		_, err = f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off)
	}
	if err == nil {
		err = sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// alignedBuf returns n zeroed bytes starting on a headerSize boundary, as
// direct I/O needs.
func alignedBuf(n int64) []byte {
	b := make([]byte, n+headerSize)
	skip := int64(0)
	if r := int64(uintptr(unsafe.Pointer(&b[0])) % headerSize); r != 0 {
		skip = headerSize - r
	}
	return b[skip : skip+n : skip+n]
}

// Fdatasync makes f's data durable with the metadata needed to read it
// back, but not its time stamps. The spool syncs Badger's logs with it too.
func Fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if !errors.Is(serr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

// readAll reads a whole segment file into an aligned buffer (direct I/O
// reads need one too). A segment is written in full before it is used, so
// a read that ends early (a read error, a file cut short) is an error: the
// records past it may have been acknowledged.
func readAll(f *os.File, size int64) ([]byte, error) {
	buf := alignedBuf(size)
	n, err := f.ReadAt(buf, 0)
	if int64(n) < size {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read %d of its %d bytes: %w", n, size, err)
	}
	return buf, nil
}
