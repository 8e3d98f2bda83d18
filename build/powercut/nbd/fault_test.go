package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// try is do without the fatal on an error reply: it returns the reply's
// error number, and a read's data when there is no error.
func (k *client) try(typ, flags uint16, off uint64, n uint32, payload []byte) (uint32, []byte) {
	k.t.Helper()
	k.handle++
	req := binary.BigEndian.AppendUint32(nil, magicRequest)
	req = binary.BigEndian.AppendUint16(req, flags)
	req = binary.BigEndian.AppendUint16(req, typ)
	req = binary.BigEndian.AppendUint64(req, k.handle)
	req = binary.BigEndian.AppendUint64(req, off)
	req = binary.BigEndian.AppendUint32(req, n)
	if _, err := k.c.Write(append(req, payload...)); err != nil {
		k.t.Fatal(err)
	}
	var r [16]byte
	if _, err := io.ReadFull(k.c, r[:]); err != nil {
		k.t.Fatal(err)
	}
	e := binary.BigEndian.Uint32(r[4:])
	if e != 0 || typ != cmdRead {
		return e, nil
	}
	out := make([]byte, n)
	if _, err := io.ReadFull(k.c, out); err != nil {
		k.t.Fatal(err)
	}
	return 0, out
}

// dialClosing is dial with the connection closed when the test ends, so a
// failing test does not leave Serve waiting for its client.
func dialClosing(t *testing.T, addr string) *client {
	k := dial(t, addr)
	t.Cleanup(func() { k.c.Close() })
	return k
}

// serveImage serves a fresh 1 MiB image until the test ends.
func serveImage(t *testing.T) (*Disk, string) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Open(img)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = d.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-d.Idle(); d.Close() })
	return d, ln.Addr().String()
}

// A write fault lets Skip matching writes through, then answers the next
// Times matching writes EIO and drops their data, in the cache and on the
// image alike; writes that do not match, and matching ones after it, go
// through.
func TestWriteFaultDropsTheFailedWrite(t *testing.T) {
	d, addr := serveImage(t)
	k := dialClosing(t, addr)
	marked := func(c byte) []byte { return append(bytes.Repeat([]byte{c}, 100), "MARK"...) }
	fired := d.Inject(Fault{Op: OpWrite, Match: []byte("MARK"), Skip: 1, Times: 2})
	plain := bytes.Repeat([]byte("p"), 4096)
	steps := []struct {
		off  uint64
		data []byte
		eio  bool
	}{
		{0, plain, false},          // does not match
		{4096, marked('a'), false}, // matches, skipped
		{8192, marked('b'), true},
		{12288, marked('c'), true},
		{16384, marked('d'), false}, // the fault is spent
	}
	for _, s := range steps {
		if e, _ := k.try(cmdWrite, 0, s.off, uint32(len(s.data)), s.data); (e == errEIO) != s.eio || (e != 0 && e != errEIO) {
			t.Fatalf("write at %d: error %d, want EIO %v", s.off, e, s.eio)
		}
	}
	select {
	case f := <-fired:
		if f.Op != OpWrite || f.Offset != 8192 || f.Length != 104 {
			t.Errorf("first failure %+v, want the write at 8192 of 104 bytes", f)
		}
	default:
		t.Fatal("the fault fired but its channel got nothing")
	}
	k.do(cmdFlush, 0, 0, 0, nil)
	check := func(when string) {
		for _, s := range steps {
			_, got := k.try(cmdRead, 0, s.off, uint32(len(s.data)), nil)
			if want := !s.eio; bytes.Equal(got, s.data) != want {
				t.Errorf("%s: the write at %d is there: %v, want %v", when, s.off, !want, want)
			}
		}
	}
	check("same session")
	k.c.Close()
	<-d.Idle()
	k = dialClosing(t, addr)
	check("after the cut")
	if st := d.Stats(); st.Failed != 2 || st.Lost != 2 {
		t.Errorf("stats %+v, want 2 failed and 2 lost blocks", st)
	}
}

// A flush fault answers EIO and loses every write not yet flushed, though
// the client still has them; writes flushed before it stay, and a fault
// armed but not fired is gone with the session.
func TestFlushFaultLosesTheCache(t *testing.T) {
	d, addr := serveImage(t)
	k := dialClosing(t, addr)
	a, b := bytes.Repeat([]byte("a"), 4096), bytes.Repeat([]byte("b"), 8192)
	k.do(cmdWrite, 0, 0, uint32(len(a)), a)
	k.do(cmdFlush, 0, 0, 0, nil)
	fired := d.Inject(Fault{Op: OpFlush})
	k.do(cmdWrite, 0, 4096, uint32(len(b)), b)
	if e, _ := k.try(cmdFlush, 0, 0, 0, nil); e != errEIO {
		t.Fatalf("flush answered %d, want EIO", e)
	}
	if f := <-fired; f.Op != OpFlush {
		t.Errorf("failure %+v", f)
	}
	if e, _ := k.try(cmdFlush, 0, 0, 0, nil); e != 0 {
		t.Fatalf("the next flush answered %d, want success", e)
	}
	if _, got := k.try(cmdRead, 0, 4096, uint32(len(b)), nil); !bytes.Equal(got, make([]byte, len(b))) {
		t.Error("writes before a failed flush survived it")
	}
	if _, got := k.try(cmdRead, 0, 0, uint32(len(a)), nil); !bytes.Equal(got, a) {
		t.Error("a write flushed before the failed flush was lost")
	}
	d.Inject(Fault{Op: OpFlush})
	k.c.Close()
	<-d.Idle()
	k = dialClosing(t, addr)
	if e, _ := k.try(cmdFlush, 0, 0, 0, nil); e != 0 {
		t.Errorf("a fault armed in the last session failed a flush of this one (%d)", e)
	}
	if st := d.Stats(); st.Failed != 1 || st.Lost != 2 {
		t.Errorf("stats %+v, want 1 failed and 2 lost blocks", st)
	}
}

// A flush fault with Match waits for a flush that comes straight after a
// write that holds it: earlier flushes, and one with another write in
// between, go through; that flush fails and loses the write.
func TestFlushFaultAfterAMarkedWrite(t *testing.T) {
	d, addr := serveImage(t)
	k := dialClosing(t, addr)
	fired := d.Inject(Fault{Op: OpFlush, Match: []byte("MARK")})
	plain, marked := bytes.Repeat([]byte("p"), 4096), append(bytes.Repeat([]byte("m"), 100), "MARK"...)
	k.do(cmdWrite, 0, 0, uint32(len(plain)), plain)
	if e, _ := k.try(cmdFlush, 0, 0, 0, nil); e != 0 {
		t.Fatalf("a flush before the marked write answered %d", e)
	}
	k.do(cmdWrite, 0, 8192, uint32(len(marked)), marked)
	k.do(cmdWrite, 0, 16384, uint32(len(plain)), plain) // a journal commit writes before its flush
	if e, _ := k.try(cmdFlush, 0, 0, 0, nil); e != 0 {
		t.Fatalf("a flush after another write answered %d", e)
	}
	marked = append(bytes.Repeat([]byte("n"), 100), "MARK"...)
	k.do(cmdWrite, 0, 8192, uint32(len(marked)), marked)
	if e, _ := k.try(cmdFlush, 0, 0, 0, nil); e != errEIO {
		t.Fatalf("the flush after the marked write answered %d, want EIO", e)
	}
	if f := <-fired; f.Op != OpFlush {
		t.Errorf("failure %+v", f)
	}
	if _, got := k.try(cmdRead, 0, 8192, uint32(len(marked)), nil); bytes.Equal(got, marked) {
		t.Error("the marked write survived the failed flush")
	}
	if _, got := k.try(cmdRead, 0, 0, uint32(len(plain)), nil); !bytes.Equal(got, plain) {
		t.Error("a write flushed before the trigger was lost")
	}
}

// Retarget moves a fault that has not fired to another mark: the old mark
// no longer counts, the new one does; once the fault has fired there is
// nothing to move.
func TestRetargetMovesAnUnfiredFault(t *testing.T) {
	d, addr := serveImage(t)
	k := dialClosing(t, addr)
	fired := d.Inject(Fault{Op: OpFlush, Match: []byte("MARK1")})
	one, two := append(bytes.Repeat([]byte("a"), 100), "MARK1"...), append(bytes.Repeat([]byte("b"), 100), "MARK2"...)
	k.do(cmdWrite, 0, 0, uint32(len(one)), one)
	if !d.Retarget([]byte("MARK2")) {
		t.Fatal("Retarget of an armed fault said it had fired")
	}
	if e, _ := k.try(cmdFlush, 0, 0, 0, nil); e != 0 {
		t.Fatalf("a flush after the old mark answered %d", e)
	}
	k.do(cmdWrite, 0, 4096, uint32(len(one)), one)
	if e, _ := k.try(cmdFlush, 0, 0, 0, nil); e != 0 {
		t.Fatalf("a flush after the old mark, written again, answered %d", e)
	}
	k.do(cmdWrite, 0, 8192, uint32(len(two)), two)
	if e, _ := k.try(cmdFlush, 0, 0, 0, nil); e != errEIO {
		t.Fatalf("the flush after the new mark answered %d, want EIO", e)
	}
	if f := <-fired; f.Op != OpFlush {
		t.Errorf("failure %+v", f)
	}
	if d.Retarget([]byte("MARK3")) {
		t.Error("Retarget of a fault that fired said it was still armed")
	}
}
