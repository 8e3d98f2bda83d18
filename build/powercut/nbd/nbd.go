// Package nbd is a disk that forgets, for the power-cut rig: an NBD server
// (fixed newstyle handshake, simple replies) over a raw image file that keeps
// every write the client has not flushed in memory and throws it away when
// the client goes (the rig kills qemu). The image file then holds exactly
// what a disk with a volatile write cache would hold after a power cut, so a
// missing flush, or a flush in the wrong order, shows up as lost data.
// A write with FUA is durable at once, as the protocol promises.
//
// The disk also fails when told to (Inject): a chosen write or flush is
// answered EIO, and what it should have made durable is really lost, as on
// an SD card or eMMC that fails a write.
package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"time"
)

const blockSize = 4096

// errInjected is an injected fault's error; the client sees EIO.
var errInjected = errors.New("nbd: injected I/O error")

// Protocol constants (NBD protocol document, "newstyle negotiation").
const (
	magicNBD        = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt        = 0x49484156454F5054 // "IHAVEOPT"
	magicOptReply   = 0x3e889045565a9
	magicRequest    = 0x25609513
	magicReply      = 0x67446698
	flagFixed       = 1
	flagNoZeroes    = 2
	optExportName   = 1
	optAbort        = 2
	optInfo         = 6
	optGo           = 7
	repAck          = 1
	repInfo         = 3
	repErrUnsup     = 1<<31 + 1
	infoExport      = 0
	txHasFlags      = 1
	txSendFlush     = 4
	txSendFUA       = 8
	txSendZeroes    = 64
	cmdRead         = 0
	cmdWrite        = 1
	cmdDisc         = 2
	cmdFlush        = 3
	cmdWriteZeroes  = 6
	cmdFlagFUA      = 1
	errEIO          = 5
	errEINVAL       = 22
	maxRequestBytes = 32 << 20
)

// Stats counts what the disk saw.
type Stats struct {
	Sessions  int
	Writes    int
	Flushes   int
	FUAWrites int
	// Forgotten is how many 4 KiB blocks of unflushed writes were thrown
	// away at the ends of sessions; Kept how many of them were written anyway.
	Forgotten, Kept int
	// Failed is how many requests an injected fault answered EIO; Lost how
	// many 4 KiB blocks they lost (a failed write's own, a failed flush's
	// whole cache).
	Failed, Lost int
}

// Op is the kind of request a Fault fails.
type Op int

// The requests a Fault can fail.
const (
	OpWrite Op = iota + 1
	OpFlush
)

func (o Op) String() string {
	switch o {
	case OpWrite:
		return "write"
	case OpFlush:
		return "flush"
	}
	return fmt.Sprintf("op %d", int(o))
}

// Fault is an I/O error to inject. A failed write is dropped: neither the
// cache nor the image gets its data, so what the client reads back is what
// was there before. A failed flush throws away every cached write (the card
// lost them) and answers EIO.
type Fault struct {
	Op Op
	// Match, for writes, makes only a write whose data contains it count:
	// the rig marks a message and so fails the write of the spool file that
	// holds it, not one of the file system's own (which would abort ext4's
	// journal, a different story). For flushes it is the trigger: only a
	// flush that comes straight after a write that contains it counts, with
	// no other write in between: the flush of an fdatasync of that write,
	// not one of ext4's journal commits (which write first). Empty: every
	// request of the kind counts.
	Match []byte
	// Skip lets this many counting requests through before the first failure.
	Skip int
	// Times is how many counting requests in a row fail (0 means 1).
	Times int
}

// Failure is what an injected fault did the first time it failed a request.
type Failure struct {
	At     time.Time
	Op     Op
	Offset int64
	Length int64
}

// armed is a Fault being counted down.
type armed struct {
	Fault
	fired chan Failure // gets the first failure; buffered
	seen  bool         // a flush fault's trigger write was the last write
}

// Disk is an image file behind a volatile write cache.
type Disk struct {
	f    *os.File
	size int64

	mu      sync.Mutex
	keep    float64
	pending map[int64][]byte // block number → its unflushed content
	stats   Stats
	idle    chan struct{} // closed while no session runs
	fault   *armed
}

// Inject arms f, replacing any fault still armed; it is disarmed when the
// session (the VM's power) ends. The channel receives the first request it
// fails.
func (d *Disk) Inject(f Fault) <-chan Failure {
	d.mu.Lock()
	defer d.mu.Unlock()
	if f.Times <= 0 {
		f.Times = 1
	}
	d.fault = &armed{Fault: f, fired: make(chan Failure, 1)}
	return d.fault.fired
}

// Retarget gives the armed fault another Match (its Skip and Times carry
// on), so that a flush fault can move on to the next marked write when
// another write came between the last one and its flush. It says whether
// a fault was still armed: false means it has failed its Times requests
// (its channel has the first), or none was armed, or its session ended.
func (d *Disk) Retarget(match []byte) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fault == nil {
		return false
	}
	d.fault.Match, d.fault.seen = match, false
	return true
}

// fails says whether the fault fails this request (called with d.mu held).
func (d *Disk) fails(op Op, off int64, p []byte, n int64) bool {
	f := d.fault
	if f == nil {
		return false
	}
	matches := len(f.Match) == 0 || bytes.Contains(p, f.Match)
	if op == OpWrite && f.Op == OpFlush {
		f.seen = matches
	}
	if f.Op != op || (op == OpWrite && !matches) || (op == OpFlush && len(f.Match) > 0 && !f.seen) {
		return false
	}
	if f.Skip > 0 {
		f.Skip--
		return false
	}
	select {
	case f.fired <- Failure{At: time.Now(), Op: op, Offset: off, Length: n}:
	default:
	}
	d.stats.Failed++
	if f.Times--; f.Times <= 0 {
		d.fault = nil
	}
	return true
}

// Open serves the image at path; its size is the disk's size.
func Open(path string) (*Disk, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("nbd image: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	idle := make(chan struct{})
	close(idle)
	return &Disk{f: f, size: st.Size(), pending: map[int64][]byte{}, idle: idle}, nil
}

// SetKeep sets the chance (0..1) that an unflushed block is written anyway
// when the client goes: a real cache writes some of its blocks, in no
// particular order, before the power fails. 0 (the default) forgets them all.
func (d *Disk) SetKeep(p float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.keep = p
}

// Close closes the image file.
func (d *Disk) Close() error { return d.f.Close() }

// Stats returns the counters so far.
func (d *Disk) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Idle is closed while no client is connected: after a cut, the rig waits on
// it before it looks at the image or boots again.
func (d *Disk) Idle() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.idle
}

// Serve accepts clients one after the other until ctx ends.
func (d *Disk) Serve(ctx context.Context, ln net.Listener) error {
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		d.mu.Lock()
		d.idle = make(chan struct{})
		d.stats.Sessions++
		d.mu.Unlock()
		_ = d.session(c)
		c.Close()
		d.mu.Lock()
		d.forget()
		d.fault = nil
		close(d.idle)
		d.mu.Unlock()
	}
}

// forget ends a session: the power is gone, and so is the cache (but for
// the blocks Keep lets through).
func (d *Disk) forget() {
	for n, b := range d.pending {
		if d.keep > 0 && rand.Float64() < d.keep {
			_, _ = d.f.WriteAt(b, n*blockSize)
			d.stats.Kept++
			continue
		}
		d.stats.Forgotten++
	}
	clear(d.pending)
}

func (d *Disk) session(c net.Conn) error {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], magicNBD)
	binary.BigEndian.PutUint64(hello[8:], magicOpt)
	binary.BigEndian.PutUint16(hello[16:], flagFixed|flagNoZeroes)
	if _, err := c.Write(hello[:]); err != nil {
		return err
	}
	var cflags uint32
	if err := binary.Read(c, binary.BigEndian, &cflags); err != nil {
		return err
	}
	txFlags := uint16(txHasFlags | txSendFlush | txSendFUA | txSendZeroes)
	for {
		var h struct {
			Magic  uint64
			Option uint32
			Len    uint32
		}
		if err := binary.Read(c, binary.BigEndian, &h); err != nil {
			return err
		}
		if h.Magic != magicOpt || h.Len > 1<<16 {
			return errors.New("nbd: bad option header")
		}
		data := make([]byte, h.Len)
		if _, err := io.ReadFull(c, data); err != nil {
			return err
		}
		switch h.Option {
		case optExportName:
			var r [10]byte
			binary.BigEndian.PutUint64(r[0:], uint64(d.size))
			binary.BigEndian.PutUint16(r[8:], txFlags)
			if _, err := c.Write(r[:]); err != nil {
				return err
			}
			if cflags&flagNoZeroes == 0 {
				if _, err := c.Write(make([]byte, 124)); err != nil {
					return err
				}
			}
			return d.transmit(c)
		case optAbort:
			_ = optReply(c, h.Option, repAck, nil)
			return nil
		case optInfo, optGo:
			info := make([]byte, 12)
			binary.BigEndian.PutUint16(info[0:], infoExport)
			binary.BigEndian.PutUint64(info[2:], uint64(d.size))
			binary.BigEndian.PutUint16(info[10:], txFlags)
			if err := optReply(c, h.Option, repInfo, info); err != nil {
				return err
			}
			if err := optReply(c, h.Option, repAck, nil); err != nil {
				return err
			}
			if h.Option == optGo {
				return d.transmit(c)
			}
		default: // structured replies, meta contexts, listing: not offered
			if err := optReply(c, h.Option, repErrUnsup, nil); err != nil {
				return err
			}
		}
	}
}

func optReply(c net.Conn, opt, typ uint32, data []byte) error {
	b := make([]byte, 20+len(data))
	binary.BigEndian.PutUint64(b[0:], magicOptReply)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], typ)
	binary.BigEndian.PutUint32(b[16:], uint32(len(data)))
	copy(b[20:], data)
	_, err := c.Write(b)
	return err
}

func (d *Disk) transmit(c net.Conn) error {
	var hdr [28]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint32(hdr[0:]) != magicRequest {
			return errors.New("nbd: bad request magic")
		}
		flags := binary.BigEndian.Uint16(hdr[4:])
		typ := binary.BigEndian.Uint16(hdr[6:])
		handle := hdr[8:16]
		off := int64(binary.BigEndian.Uint64(hdr[16:]))
		n := int64(binary.BigEndian.Uint32(hdr[24:]))
		var payload []byte
		if typ == cmdWrite {
			if n > maxRequestBytes {
				return errors.New("nbd: write too large")
			}
			payload = make([]byte, n)
			if _, err := io.ReadFull(c, payload); err != nil {
				return err
			}
		}
		if typ == cmdDisc {
			return nil
		}
		var errno uint32
		var out []byte
		if (typ == cmdRead || typ == cmdWrite || typ == cmdWriteZeroes) && (off < 0 || n < 0 || off+n > d.size || n > maxRequestBytes) {
			errno = errEINVAL
		} else {
			var err error
			switch typ {
			case cmdRead:
				out, err = d.read(off, n)
			case cmdWrite:
				err = d.write(off, payload, flags&cmdFlagFUA != 0)
			case cmdWriteZeroes:
				err = d.write(off, make([]byte, n), flags&cmdFlagFUA != 0)
			case cmdFlush:
				err = d.flush()
			default:
				errno = errEINVAL
			}
			if err != nil {
				errno = errEIO
			}
		}
		r := make([]byte, 16, 16+len(out))
		binary.BigEndian.PutUint32(r[0:], magicReply)
		binary.BigEndian.PutUint32(r[4:], errno)
		copy(r[8:], handle)
		if errno == 0 {
			r = append(r, out...)
		}
		if _, err := c.Write(r); err != nil {
			return err
		}
	}
}

// block returns block n as the client sees it (cached or on the image).
func (d *Disk) block(n int64) ([]byte, error) {
	if b, ok := d.pending[n]; ok {
		return b, nil
	}
	b := make([]byte, blockSize)
	if _, err := d.f.ReadAt(b, n*blockSize); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}

func (d *Disk) read(off, n int64) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]byte, 0, n)
	for pos := off; pos < off+n; {
		bn, in := pos/blockSize, pos%blockSize
		b, err := d.block(bn)
		if err != nil {
			return nil, err
		}
		k := min(blockSize-in, off+n-pos)
		out = append(out, b[in:in+k]...)
		pos += k
	}
	return out, nil
}

func (d *Disk) write(off int64, p []byte, fua bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats.Writes++
	if d.fails(OpWrite, off, p, int64(len(p))) {
		d.stats.Lost += int((off+int64(len(p))+blockSize-1)/blockSize - off/blockSize)
		return errInjected
	}
	for pos := off; pos < off+int64(len(p)); {
		bn, in := pos/blockSize, pos%blockSize
		b, err := d.block(bn)
		if err != nil {
			return err
		}
		if _, cached := d.pending[bn]; !cached {
			b = slices.Clone(b)
		}
		k := min(blockSize-in, off+int64(len(p))-pos)
		copy(b[in:in+k], p[pos-off:pos-off+k])
		d.pending[bn] = b
		pos += k
	}
	if fua {
		d.stats.FUAWrites++
		if _, err := d.f.WriteAt(p, off); err != nil {
			return err
		}
	}
	return nil
}

// flush makes every cached write durable (on the image file; the host does
// not lose power, so the host's page cache counts as durable).
func (d *Disk) flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats.Flushes++
	if d.fails(OpFlush, 0, nil, 0) {
		d.stats.Lost += len(d.pending)
		clear(d.pending)
		return errInjected
	}
	for n, b := range d.pending {
		if _, err := d.f.WriteAt(b, n*blockSize); err != nil {
			return err
		}
	}
	clear(d.pending)
	return nil
}
