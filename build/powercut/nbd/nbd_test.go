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

// client speaks just enough NBD to drive the server: fixed newstyle,
// NBD_OPT_GO, simple replies.
type client struct {
	t      *testing.T
	c      net.Conn
	handle uint64
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var hello [18]byte
	if _, err := io.ReadFull(c, hello[:]); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint64(hello[:]) != magicNBD || binary.BigEndian.Uint64(hello[8:]) != magicOpt {
		t.Fatalf("bad greeting % x", hello)
	}
	_ = binary.Write(c, binary.BigEndian, uint32(flagFixed|flagNoZeroes))
	name := "disk"
	opt := binary.BigEndian.AppendUint64(nil, magicOpt)
	opt = binary.BigEndian.AppendUint32(opt, optGo)
	opt = binary.BigEndian.AppendUint32(opt, uint32(4+len(name)+2))
	opt = binary.BigEndian.AppendUint32(opt, uint32(len(name)))
	opt = append(opt, name...)
	opt = binary.BigEndian.AppendUint16(opt, 0)
	if _, err := c.Write(opt); err != nil {
		t.Fatal(err)
	}
	for {
		var h [20]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, binary.BigEndian.Uint32(h[16:]))
		if _, err := io.ReadFull(c, data); err != nil {
			t.Fatal(err)
		}
		if binary.BigEndian.Uint32(h[12:]) == repAck {
			break
		}
	}
	return &client{t: t, c: c}
}

func (k *client) do(typ, flags uint16, off uint64, n uint32, payload []byte) []byte {
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
	if e := binary.BigEndian.Uint32(r[4:]); e != 0 || binary.BigEndian.Uint64(r[8:]) != k.handle {
		k.t.Fatalf("reply error %d handle %d", e, binary.BigEndian.Uint64(r[8:]))
	}
	if typ != cmdRead {
		return nil
	}
	out := make([]byte, n)
	if _, err := io.ReadFull(k.c, out); err != nil {
		k.t.Fatal(err)
	}
	return out
}

// The disk keeps unflushed writes from the client that made them, forgets
// them when the client goes, and keeps what was flushed or written with FUA.
func TestDiskForgetsWhatWasNotFlushed(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = d.Serve(ctx, ln) }()
	a, b, c := bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("b"), 512), bytes.Repeat([]byte("c"), 4096)

	k := dial(t, ln.Addr().String())
	k.do(cmdWrite, 0, 100, uint32(len(a)), a) // unaligned, inside block 0
	k.do(cmdFlush, 0, 0, 0, nil)
	k.do(cmdWrite, 0, 8192, uint32(len(b)), b)           // never flushed
	k.do(cmdWrite, cmdFlagFUA, 16384, uint32(len(c)), c) // durable at once
	if got := k.do(cmdRead, 0, 8192, 512, nil); !bytes.Equal(got, b) {
		t.Fatal("an unflushed write is not visible to its own client")
	}
	k.c.Close() // the power goes
	<-d.Idle()  // the session began at dial, so this waits for its end

	k = dial(t, ln.Addr().String())
	defer k.c.Close()
	if got := k.do(cmdRead, 0, 100, uint32(len(a)), nil); !bytes.Equal(got, a) {
		t.Error("a flushed write was lost")
	}
	if got := k.do(cmdRead, 0, 8192, 512, nil); !bytes.Equal(got, make([]byte, 512)) {
		t.Error("an unflushed write survived the cut")
	}
	if got := k.do(cmdRead, 0, 16384, 4096, nil); !bytes.Equal(got, c) {
		t.Error("a FUA write was lost")
	}
	if st := d.Stats(); st.Forgotten == 0 || st.Flushes != 1 || st.FUAWrites != 1 {
		t.Errorf("stats %+v", st)
	}
}
