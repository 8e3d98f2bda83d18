package lis01

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"
)

// streamLink plays a fixed byte stream in uneven chunks, records what is
// written, and at the end either closes (io.EOF) or stalls, honouring the
// read deadline as a real line would.
type streamLink struct {
	data     []byte
	stall    bool
	mu       sync.Mutex
	deadline time.Time
	out      []byte
	chunk    int
}

func (l *streamLink) Read(p []byte) (int, error) {
	if len(l.data) == 0 {
		if !l.stall {
			return 0, io.EOF
		}
		l.mu.Lock()
		d := l.deadline
		l.mu.Unlock()
		time.Sleep(time.Until(d))
		return 0, os.ErrDeadlineExceeded
	}
	l.chunk = l.chunk%13 + 1
	n := copy(p[:min(len(p), l.chunk)], l.data)
	l.data = l.data[n:]
	return n, nil
}

func (l *streamLink) Write(p []byte) (int, error) {
	l.out = append(l.out, p...)
	return len(p), nil
}

func (l *streamLink) SetReadDeadline(t time.Time) error {
	l.mu.Lock()
	l.deadline = t
	l.mu.Unlock()
	return nil
}

func seedStreams() [][]byte {
	var s [][]byte
	msg := append([]byte{ENQ}, AppendFrame(nil, 1, bytes.Repeat([]byte("OBX|1|\r"), 40), false)...)
	msg = append(msg, AppendFrame(nil, 2, []byte("MSH|^~\\&|A\r"), true)...)
	s = append(s, append(bytes.Clone(msg), EOT))
	bad := bytes.Clone(msg)
	bad[10] ^= 0x40
	s = append(s, bad)
	s = append(s, []byte("noise\x05\x021ABC\x03FA\r\n\x04"))
	s = append(s, []byte{ENQ, STX, '1', 'x', ETB, ENQ, STX, STX, EOT, ENQ, STX, '9'})
	s = append(s, append([]byte{ENQ, STX}, bytes.Repeat([]byte{'a'}, 400)...))
	return s
}

// FuzzReceiver feeds arbitrary byte streams to a Receiver: it must not
// panic, must answer only ACK or NAK, must return within its deadlines,
// and must never hand out text with a frame delimiter in it.
func FuzzReceiver(f *testing.F) {
	for _, s := range seedStreams() {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, stall bool) {
		l := &streamLink{data: bytes.Clone(data), stall: stall}
		opt := Options{
			FrameTimeout:    2 * time.Millisecond,
			Poll:            time.Millisecond,
			MaxFrameText:    300,
			MaxMessageBytes: 1000,
		}
		rx := NewReceiver(l, opt)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		start := time.Now()
		for i := 0; ; i++ {
			msg, commit, err := rx.Receive(ctx)
			if errors.Is(err, ErrTooLarge) {
				continue
			}
			if err != nil {
				break
			}
			if len(msg) > opt.MaxMessageBytes {
				t.Fatalf("message of %d bytes past the %d limit", len(msg), opt.MaxMessageBytes)
			}
			if bytes.ContainsAny(msg, "\x02\x04\n") {
				t.Fatalf("message text holds a delimiter: %q", msg)
			}
			if err := commit(i%3 != 0); err != nil {
				t.Fatal(err)
			}
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Fatalf("Receive ran %v on a %d-byte stream", el, len(data))
		}
		for _, b := range l.out {
			if b != ACK && b != NAK {
				t.Fatalf("receiver wrote %s", name(b))
			}
		}
	})
}

// FuzzFrame: any text framed by AppendFrame parses back identically, and
// parseFrame survives arbitrary bytes.
func FuzzFrame(f *testing.F) {
	f.Add([]byte("MSH|^~\\&|LAB\r"), 1, true)
	f.Add([]byte{}, 0, false)
	f.Add([]byte{0xFF, 0x00, CR}, 7, true)
	f.Fuzz(func(t *testing.T, text []byte, fn int, final bool) {
		_, _ = parseFrame(text)
		fn &= 7
		fr := AppendFrame(nil, fn, text, final)
		p, err := parseFrame(fr[1 : len(fr)-1])
		if err != nil {
			t.Fatalf("own frame refused: %v", err)
		}
		if p.fn != fn || p.final != final || !bytes.Equal(p.text, text) {
			t.Fatalf("round trip: got fn=%d final=%v %q", p.fn, p.final, p.text)
		}
	})
}

// FuzzSplitMessages: splitting loses and adds nothing, and every part
// after the first starts a message.
func FuzzSplitMessages(f *testing.F) {
	f.Add([]byte("MSH|a\rPID|1\rMSH|b\r"))
	f.Add([]byte("junk\nMSH|a\r\nMSH"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, text []byte) {
		parts := SplitMessages(text)
		if !bytes.Equal(bytes.Join(parts, nil), text) {
			t.Fatal("parts do not rebuild the text")
		}
		for i, p := range parts {
			if len(p) == 0 {
				t.Fatalf("part %d empty", i)
			}
			if i > 0 && !bytes.HasPrefix(p, []byte("MSH")) {
				t.Fatalf("part %d does not start with MSH: %q", i, p)
			}
		}
	})
}
