// Package commitlog is the spool's write-ahead log: the records of each
// group commit are appended in order and made durable with one write,
// into segment files that were written in full when they were made and
// are reused, never grown or removed.
//
// Why its own log, and not Badger's memtable log: Badger makes that log
// sparse (ftruncate), writes it through a shared memory map and deletes it
// after each flush, so on ext4 every sync allocates blocks and commits the
// journal, and every page is write-protected again after each sync. Here a
// sync is one pwrite of the dirty blocks into blocks that already hold
// data, which on ext4 needs no journal; where the file system allows
// direct I/O (statx STATX_DIOALIGN) the write goes to the device in
// 512-byte sectors with O_DSYNC instead of through 4 KiB pages and a
// separate Fdatasync. RocksDB (recycle_log_file_num) and Pebble reuse
// their log files for the same reason.
//
// The caller decides when a segment's records are durable elsewhere
// (Release): until then the segment is kept, and Replay hands back every
// record from the oldest kept segment on. Replay is only correct if
// applying a record twice is the same as applying it once, in order: the
// spool's records are sets and deletes of keys, which are.
package commitlog

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// Options of a log.
type Options struct {
	// SegmentSize is the size of every segment file; a record can be at
	// most SegmentSize - 4 KiB - 16 bytes. Default 4 MiB.
	SegmentSize int64
	// Key encrypts record bodies (AES, 16, 24 or 32 bytes); nil for none.
	Key []byte
	// Buffered turns direct I/O off: writes go through the page cache and
	// each is followed by Sync.
	Buffered bool
	// Sync makes a written range durable. Default: Fdatasync in buffered
	// mode, nothing in direct mode (O_DSYNC made the write durable). Tests
	// set it to fail on purpose; it is then called in both modes.
	Sync func(*os.File) error
	// Flush runs each flush the log makes on its own account, the seal of
	// a full segment inside an Append, so that the caller can order it
	// with other writers' (storage/syncgate). An error it returns without
	// running the flush fails the log as a failed write does. Nil: run it.
	Flush func(flush func() error) error
}

// DefaultSegmentSize holds a few thousand lab results.
const DefaultSegmentSize = 4 << 20

// Log is one commit log. Its methods are safe for concurrent use; writes
// are serialised, so a record appended while another goroutine syncs waits
// for that sync.
type Log struct {
	dir   string
	size  int64
	crypt *crypter
	mode  ioMode
	sync  func(*os.File) error
	flush func(func() error) error

	mu    sync.Mutex
	slots []*slot
	cur   *slot
	buf   []byte // the current segment's bytes as they will be on disk
	end   int64  // where the next record goes
	// synced is how much of cur is durable; headerDirty says cur's header
	// is not yet.
	synced      int64
	headerDirty bool
	maxSeq      uint64 // the highest seq of any header seen or written
	start       uint64 // the oldest seq not released
	// durableStart is the start recorded in the newest header that is
	// durable: a file whose seq is below it is never read again.
	durableStart uint64
	err          error // sticky: after a failed write nothing more is written
	stats        Stats
}

// Stats are the log's figures since it was opened.
type Stats struct {
	Records, Bytes, Writes, Rotations, Created uint64
	Live                                       int // segments kept
	Direct                                     bool
}

// Open opens (or creates) the log in dir. Nothing is written until
// Restart, which the caller calls after Replay and after making what
// Replay applied durable.
func Open(dir string, o Options) (*Log, error) {
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.SegmentSize < 2*headerSize || o.SegmentSize%headerSize != 0 || o.SegmentSize > 1<<30 {
		return nil, fmt.Errorf("commit log segment size %d: want a multiple of 4 KiB between 8 KiB and 1 GiB", o.SegmentSize)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("commit log directory: %w", err)
	}
	c, err := newCrypter(o.Key)
	if err != nil {
		return nil, err
	}
	l := &Log{dir: dir, size: o.SegmentSize, crypt: c}
	first, err := firstSlot(dir, o.SegmentSize)
	if err != nil {
		return nil, err
	}
	// Direct I/O alignment is a property of regular files, so the probe
	// asks about one.
	l.mode = probeMode(first, !o.Buffered)
	l.sync = o.Sync
	l.flush = o.Flush
	if l.sync == nil && !l.mode.direct {
		l.sync = Fdatasync
	}
	if err := l.openSlots(); err != nil {
		l.closeFiles()
		return nil, err
	}
	return l, nil
}

// firstSlot returns the path of the lowest-numbered segment file, making
// the first one when there is none.
func firstSlot(dir string, size int64) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("commit log directory: %w", err)
	}
	for _, e := range ents {
		if _, ok := slotNum(e.Name()); ok && e.Type().IsRegular() {
			return filepath.Join(dir, e.Name()), nil
		}
	}
	p := slotPath(dir, 0)
	if err := createSlot(p, size, Fdatasync); err != nil {
		return "", fmt.Errorf("commit log: make segment file %s of %d bytes: %w (check free space on the card)", p, size, err)
	}
	return p, nil
}

func (l *Log) openSlots() error {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("commit log directory: %w", err)
	}
	for _, e := range ents {
		num, ok := slotNum(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		s := &slot{num: num, path: slotPath(l.dir, num)}
		if s.f, err = openSlot(s.path, l.mode); err != nil {
			return fmt.Errorf("commit log segment %s: %w", s.path, err)
		}
		hb := alignedBuf(headerSize)
		l.slots = append(l.slots, s)
		// A file shorter than a header was cut while it was made, and
		// holds nothing; any other read error may hide a needed header.
		n, err := s.f.ReadAt(hb, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("commit log segment %s: read its header: %w", s.path, err)
		}
		if n == headerSize {
			h, ok, err := decodeHeader(hb)
			if err != nil {
				return fmt.Errorf("commit log segment %s: %w (nothing in it was changed: start the firmware that wrote it; if that one was stopped cleanly, Badger's files hold every record too, and moving %s away lets this one open)", s.path, err, l.dir)
			}
			if ok {
				s.h = h
				l.maxSeq = max(l.maxSeq, h.seq)
			}
		}
	}
	slices.SortFunc(l.slots, func(a, b *slot) int { return a.num - b.num })
	return nil
}

// Replay calls fn with every record the log holds, oldest first: those of
// the newest durable header's range of segments. Each must be present and,
// but for the last, end with its seal; otherwise it returns ErrCorrupt
// before calling fn at all.
func (l *Log) Replay(fn func(body []byte) error) (records int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	newest := l.newestLocked()
	if newest == nil {
		return 0, nil
	}
	segs, err := l.rangeLocked(newest.h.start, newest.h.seq)
	if err != nil {
		return 0, err
	}
	// Every segment but the last must end with its seal before any record
	// is handed out. Each is read twice rather than all held at once: the
	// log may keep a few tens of MiB.
	for _, s := range segs[:len(segs)-1] {
		data, err := readAll(s.f, l.size)
		if err != nil {
			return 0, fmt.Errorf("%w: read segment %d (%s): %w", ErrCorrupt, s.h.seq, s.path, err)
		}
		if _, sealed, err := scan(data, s.h, l.crypt, func([]byte) error { return nil }); err != nil || !sealed {
			return 0, fmt.Errorf("%w: segment %d (%s) ends before its seal, and later ones follow: the card lost acknowledged writes", ErrCorrupt, s.h.seq, s.path)
		}
	}
	for _, s := range segs {
		data, err := readAll(s.f, l.size)
		if err != nil {
			return records, fmt.Errorf("%w: read segment %d (%s): %w", ErrCorrupt, s.h.seq, s.path, err)
		}
		if _, _, err := scan(data, s.h, l.crypt, func(b []byte) error {
			records++
			return fn(b)
		}); err != nil {
			return records, err
		}
	}
	return records, nil
}

func (l *Log) newestLocked() *slot {
	var newest *slot
	for _, s := range l.slots {
		if s.h.seq != 0 && (newest == nil || s.h.seq > newest.h.seq) {
			newest = s
		}
	}
	return newest
}

// rangeLocked returns the segments numbered from..to, in order.
func (l *Log) rangeLocked(from, to uint64) ([]*slot, error) {
	bySeq := map[uint64]*slot{}
	for _, s := range l.slots {
		if s.h.seq != 0 {
			bySeq[s.h.seq] = s
		}
	}
	var out []*slot
	for q := from; q <= to; q++ {
		s := bySeq[q]
		if s == nil {
			return nil, fmt.Errorf("%w: segment %d of %d..%d is missing in %s", ErrCorrupt, q, from, to, l.dir)
		}
		out = append(out, s)
	}
	return out, nil
}

// Restart begins a new segment whose header says that nothing before it
// is needed, and makes that header durable. The caller must have made
// everything Replay applied durable first: from here on the old records
// are never read again.
func (l *Log) Restart() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	l.start = l.maxSeq + 1
	if err := l.beginLocked(); err != nil {
		return err
	}
	err := l.writeLocked()
	if err != nil && l.mode.direct && errors.Is(err, unix.EINVAL) {
		// statx promised direct I/O that the file system then refuses:
		// writing through the page cache is slower but works.
		if err = l.toBufferedLocked(); err == nil {
			err = l.writeLocked()
		}
	}
	return err
}

// toBufferedLocked reopens every segment file without O_DIRECT.
func (l *Log) toBufferedLocked() error {
	l.mode = ioMode{align: 512}
	if l.sync == nil {
		l.sync = Fdatasync
	}
	l.err = nil
	for _, s := range l.slots {
		if s.f != nil {
			_ = s.f.Close()
		}
		f, err := openSlot(s.path, l.mode)
		if err != nil {
			l.err = fmt.Errorf("commit log segment %s: %w", s.path, err)
			return l.err
		}
		s.f = f
	}
	return nil
}

// Append adds one record. It is durable once Sync returns; until then it
// may be lost, alone or with those after it, never before them.
func (l *Log) Append(body []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	if l.cur == nil {
		return errors.New("commit log: Append before Restart")
	}
	if len(body) == 0 {
		return errors.New("commit log: an empty record cannot be told from the end of a segment")
	}
	need := int64(recordHead + len(body))
	if need > l.size-headerSize-recordHead {
		return fmt.Errorf("commit log record of %d bytes is over the %d bytes a segment holds", len(body), l.size-headerSize-2*recordHead)
	}
	if l.end+need+recordHead > l.size {
		if err := l.rotateLocked(); err != nil {
			return err
		}
	}
	l.putRecordLocked(body)
	l.stats.Records++
	l.stats.Bytes += uint64(need)
	return nil
}

func (l *Log) putRecordLocked(body []byte) {
	b := l.buf[l.end:]
	n := uint32(len(body))
	dst := b[recordHead : recordHead+len(body)]
	if l.crypt != nil {
		l.crypt.xor(l.cur.h, l.end, dst, body)
	} else {
		copy(dst, body)
	}
	putU32(b[0:], n)
	putU32(b[4:], recordCRC(l.cur.h, n, dst))
	l.end += recordHead + int64(n)
}

// Sync makes every record appended so far durable. After a failure it
// keeps failing: the caller re-opens the log from disk.
func (l *Log) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	if l.cur == nil || (l.end == l.synced && !l.headerDirty) {
		return nil
	}
	return l.writeLocked()
}

// Pending says whether records wait for a Sync.
func (l *Log) Pending() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur != nil && (l.end != l.synced || l.headerDirty)
}

// writeLocked writes the dirty blocks of the current segment (the header's
// too while it is new) and makes them durable.
func (l *Log) writeLocked() error {
	a := l.mode.align
	from := l.synced / a * a
	if l.headerDirty {
		from = 0
	}
	to := min((l.end+a-1)/a*a, l.size)
	_, err := l.cur.f.WriteAt(l.buf[from:to], from)
	if err == nil && l.sync != nil {
		err = l.sync(l.cur.f)
	}
	l.stats.Writes++
	if err != nil {
		l.err = fmt.Errorf("commit log write to %s: %w", l.cur.path, err)
		return l.err
	}
	l.synced = l.end
	if l.headerDirty {
		l.headerDirty = false
		l.durableStart = l.cur.h.start
	}
	return nil
}

// rotateLocked seals the current segment, makes it durable, and begins
// the next in a free file (or a new one).
func (l *Log) rotateLocked() error {
	putU32(l.buf[l.end:], sealLen)
	putU32(l.buf[l.end+4:], recordCRC(l.cur.h, sealLen, nil))
	l.end += recordHead
	if err := l.ownFlushLocked(); err != nil {
		return err
	}
	l.stats.Rotations++
	return l.beginLocked()
}

// ownFlushLocked writes and syncs what the log holds through
// Options.Flush. A refusal that never reached the write leaves the segment
// sealed in memory only, so it fails the log like a failed write.
func (l *Log) ownFlushLocked() error {
	if l.flush == nil {
		return l.writeLocked()
	}
	err := l.flush(l.writeLocked)
	if err != nil && l.err == nil {
		l.err = fmt.Errorf("commit log write to %s: %w", l.cur.path, err)
	}
	if err != nil {
		return l.err
	}
	return nil
}

// beginLocked takes a file no durable header still needs and starts the
// next segment in it, in memory: its header is written with its first
// records.
func (l *Log) beginLocked() error {
	s, err := l.freeSlotLocked()
	if err != nil {
		l.err = err
		return err
	}
	var salt [8]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return fmt.Errorf("commit log salt: %w", err)
	}
	l.maxSeq++
	l.start = min(max(l.start, 1), l.maxSeq)
	s.h = header{seq: l.maxSeq, start: l.start, salt: salt, crypt: l.crypt != nil}
	if l.buf == nil {
		l.buf = alignedBuf(l.size)
	}
	clear(l.buf)
	s.h.encode(l.buf)
	l.cur, l.end, l.synced, l.headerDirty = s, headerSize, 0, true
	return nil
}

// freeSlotLocked finds a file whose records no durable header needs: one
// never used, or one older than the newest durable header's start. Before
// Restart's header is durable only files outside the range on disk are.
func (l *Log) freeSlotLocked() (*slot, error) {
	keepFrom := l.durableStart
	if keepFrom == 0 {
		if n := l.newestLocked(); n != nil {
			keepFrom = n.h.start
		}
	}
	for _, s := range l.slots {
		if s == l.cur {
			continue
		}
		if s.h.seq == 0 || s.h.seq < keepFrom {
			if fi, err := s.f.Stat(); err == nil && fi.Size() == l.size {
				return s, nil
			}
		}
	}
	num := 0
	if len(l.slots) > 0 {
		num = l.slots[len(l.slots)-1].num + 1
	}
	s := &slot{num: num, path: slotPath(l.dir, num)}
	sync := l.sync
	if sync == nil {
		sync = Fdatasync
	}
	if err := createSlot(s.path, l.size, sync); err != nil {
		return nil, fmt.Errorf("commit log: make segment file %s of %d bytes: %w (check free space on the card)", s.path, l.size, err)
	}
	f, err := openSlot(s.path, l.mode)
	if err != nil {
		return nil, fmt.Errorf("commit log: open %s: %w", s.path, err)
	}
	s.f = f
	l.slots = append(l.slots, s)
	l.stats.Created++
	return s, nil
}

// SetSync replaces Options.Sync (tests).
func (l *Log) SetSync(f func(*os.File) error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sync = f
}

// Current is the seq of the segment being written.
func (l *Log) Current() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return 0
	}
	return l.cur.h.seq
}

// Release says that the records of every segment before seq are durable
// elsewhere: the next segment's header says they are no longer needed,
// and once it is durable their files are reused.
func (l *Log) Release(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur != nil {
		seq = min(seq, l.cur.h.seq)
	}
	l.start = max(l.start, seq)
}

// Live is how many segments the log keeps for replay: those from the
// oldest not released to the current.
func (l *Log) Live() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.liveLocked()
}

func (l *Log) liveLocked() int {
	if l.cur == nil {
		return 0
	}
	return int(l.cur.h.seq-l.start) + 1
}

// Stats returns the log's figures.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.stats
	st.Live = l.liveLocked()
	st.Direct = l.mode.direct
	return st
}

// Close closes the files; it does not sync.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = errors.New("commit log is closed")
	}
	return l.closeFiles()
}

func (l *Log) closeFiles() error {
	var first error
	for _, s := range l.slots {
		if s.f != nil {
			if err := s.f.Close(); err != nil && first == nil {
				first = err
			}
			s.f = nil
		}
	}
	return first
}

func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
