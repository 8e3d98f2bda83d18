package lis01

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// tcpPair returns both ends of a real loopback TCP connection: the kernel
// buffers both directions, as a serial line does.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { a.Close(); r.c.Close() })
	return a, r.c
}

// counts collects Options.Count events.
type counts struct {
	mu sync.Mutex
	m  map[string]uint64
}

func (c *counts) add(name string, n uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]uint64{}
	}
	c.m[name] += n
}

func (c *counts) get(name string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[name]
}

// fastOpts are short timeouts so that timeout paths run in milliseconds.
func fastOpts(c *counts) Options {
	return Options{
		ReplyTimeout: 2 * time.Second,
		FrameTimeout: 2 * time.Second,
		BusyDelay:    10 * time.Millisecond,
		Poll:         20 * time.Millisecond,
		Count:        c.add,
	}
}

// device drives the far end of a link by hand, byte by byte.
type device struct {
	t *testing.T
	c net.Conn
}

func (d *device) send(parts ...any) {
	d.t.Helper()
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case byte:
			b = append(b, v)
		case []byte:
			b = append(b, v...)
		case string:
			b = append(b, v...)
		default:
			d.t.Fatalf("device.send: %T", p)
		}
	}
	if _, err := d.c.Write(b); err != nil {
		d.t.Fatal(err)
	}
}

// expect reads one byte and fails unless it is want.
func (d *device) expect(want byte) {
	d.t.Helper()
	got, err := d.read(3 * time.Second)
	if err != nil {
		d.t.Fatalf("waiting for %s: %v", name(want), err)
	}
	if got != want {
		d.t.Fatalf("got %s, want %s", name(got), name(want))
	}
}

// expectSilence fails if a byte arrives within d.
func (d *device) expectSilence(wait time.Duration) {
	d.t.Helper()
	if b, err := d.read(wait); err == nil {
		d.t.Fatalf("got %s, want no reply yet", name(b))
	}
}

func (d *device) read(wait time.Duration) (byte, error) {
	var b [1]byte
	d.c.SetReadDeadline(time.Now().Add(wait))
	_, err := d.c.Read(b[:])
	return b[0], err
}

func name(b byte) string {
	switch b {
	case ACK:
		return "ACK"
	case NAK:
		return "NAK"
	case ENQ:
		return "ENQ"
	case EOT:
		return "EOT"
	case STX:
		return "STX"
	}
	return fmt.Sprintf("0x%02X", b)
}

// received is one Receive result delivered to a test goroutine.
type received struct {
	msg    []byte
	commit func(bool) error
	err    error
}

// receiveAsync runs Receive in a goroutine and hands back its result.
func receiveAsync(ctx context.Context, r *Receiver) <-chan received {
	ch := make(chan received, 1)
	go func() {
		m, c, err := r.Receive(ctx)
		ch <- received{m, c, err}
	}()
	return ch
}

func wait(t *testing.T, ch <-chan received) received {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("Receive did not return")
	}
	return received{}
}

// hl7 makes a CR-separated HL7 message of about n bytes.
func hl7(id string, n int) []byte {
	var b bytes.Buffer
	b.WriteString("MSH|^~\\&|LAB|ANALYZER|HIS|WARD|20240101120000||ORU^R01|" + id + "|P|2.5\r")
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "OBX|%d|NM|GLU^Glucose||%d.%d|mmol/L|||||F\r", i, i%20, i%10)
	}
	return b.Bytes()
}
