package mllp

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"testing"
)

// benchFrames is n frames of size bytes each, framed.
func benchFrames(b *testing.B, n, size int) []byte {
	b.Helper()
	msg := bytes.Repeat([]byte("OBX|1|NM|GLU||5.4\r"), size/18+1)[:size]
	var buf bytes.Buffer
	for range n {
		if err := WriteFrame(&buf, msg); err != nil {
			b.Fatal(err)
		}
	}
	return buf.Bytes()
}

func BenchmarkReadFrame(b *testing.B) {
	for _, size := range []int{512, 16 << 10, 1 << 20} {
		b.Run(sizeName(size), func(b *testing.B) {
			const perRound = 64
			stream := benchFrames(b, perRound, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			r := NewReader(&loopReader{data: stream}, 2<<20)
			for b.Loop() {
				if _, err := r.ReadFrame(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReadOversizeFrame(b *testing.B) {
	// Discarding the tail of an oversize frame: the cost of a hostile sender.
	stream := benchFrames(b, 1, 8<<20)
	b.SetBytes(8 << 20)
	b.ReportAllocs()
	for b.Loop() {
		r := NewReader(bytes.NewReader(stream), 64<<10)
		if _, err := r.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteFrame(b *testing.B) {
	for _, size := range []int{512, 16 << 10, 1 << 20} {
		b.Run(sizeName(size), func(b *testing.B) {
			msg := bytes.Repeat([]byte("x"), size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if err := WriteFrame(io.Discard, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSendLoopback is one message and its ACK through the real
// listener and client over loopback TCP.
func BenchmarkSendLoopback(b *testing.B) {
	ts := startServer(b, ListenerConfig{}, HandlerFunc(func(context.Context, string, Frame) []byte {
		return []byte("MSH|^~\\&|||||||ACK|1|P|2.5\rMSA|AA|1\r")
	}))
	c, err := Dial(context.Background(), ts.addr(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("OBX|1|NM|GLU||5.4\r"), 60)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Send(context.Background(), msg); err != nil {
			b.Fatal(err)
		}
	}
}

type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	if l.off == len(l.data) {
		l.off = 0
	}
	n := copy(p, l.data[l.off:])
	l.off += n
	return n, nil
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return strconv.Itoa(n>>20) + "MiB"
	case n >= 1<<10:
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}
