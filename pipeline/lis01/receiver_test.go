package lis01

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func frameOf(fn int, text string, final bool) []byte {
	return AppendFrame(nil, fn, []byte(text), final)
}

func TestChecksumKnownValue(t *testing.T) {
	// '1'+'A'+'B'+'C'+ETX = 0x31+0x41+0x42+0x43+0x03 = 0xFA
	got := frameOf(1, "ABC", true)
	want := []byte{STX, '1', 'A', 'B', 'C', ETX, 'F', 'A', CR, LF}
	if !bytes.Equal(got, want) {
		t.Fatalf("frame = %q, want %q", got, want)
	}
	// Sums wrap modulo 256 and ETB counts: '7'+0xFF*2+ETB = 0x37+0x1FE+0x17 = 0x24C -> 4C
	got = AppendFrame(nil, 7, []byte{0xFF, 0xFF}, false)
	if !bytes.Equal(got[len(got)-4:], []byte{'4', 'C', CR, LF}) || got[len(got)-5] != ETB {
		t.Fatalf("frame = %q, want ETB 4C CR LF at the end", got)
	}
}

func TestParseFrame(t *testing.T) {
	good := frameOf(3, "PID|1\r", false)
	f, err := parseFrame(good[1 : len(good)-1])
	if err != nil || f.fn != 3 || f.final || string(f.text) != "PID|1\r" {
		t.Fatalf("parseFrame(good) = %+v, %v", f, err)
	}
	if _, err := parseFrame([]byte("1ABC\x03fa\r")); err != nil {
		t.Fatalf("lowercase checksum refused: %v", err)
	}
	bad := map[string][]byte{
		"short":       {'1', ETX, 'A', CR},
		"no CR":       []byte("1ABC\x03FA\n"),
		"no ETX":      []byte("1ABCDFA\r"),
		"bad hex":     []byte("1ABC\x03FG\r"),
		"bad sum":     []byte("1ABC\x03FB\r"),
		"fn not 0..7": append([]byte("8ABC\x03"), []byte{hexDigits[(Checksum([]byte("8ABC\x03")))>>4], hexDigits[Checksum([]byte("8ABC\x03"))&15], CR}...),
	}
	for name, b := range bad {
		if _, err := parseFrame(b); err == nil {
			t.Errorf("%s: parseFrame(%q) accepted", name, b)
		}
	}
}

func TestSplitMessages(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"MSH|a\rPID|1\r", []string{"MSH|a\rPID|1\r"}},
		{"MSH|a\rPID|1\rMSH|b\rPID|2\r", []string{"MSH|a\rPID|1\r", "MSH|b\rPID|2\r"}},
		{"MSH|a\r\nMSH|b\r\n", []string{"MSH|a\r\n", "MSH|b\r\n"}},
		{"junk\rMSH|a\rMSH|b", []string{"junk\rMSH|a\r", "MSH|b"}},
		{"MSH|a\rOBX|1|ST|MSH stays inside a field\r", []string{"MSH|a\rOBX|1|ST|MSH stays inside a field\r"}},
	}
	for _, c := range cases {
		var got []string
		for _, m := range SplitMessages([]byte(c.in)) {
			got = append(got, string(m))
		}
		if len(got) != len(c.want) {
			t.Errorf("SplitMessages(%q) = %q, want %q", c.in, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("SplitMessages(%q) = %q, want %q", c.in, got, c.want)
			}
		}
	}
}

// TestRoundTrip sends messages of awkward sizes (empty frames never occur;
// exactly one frame; one byte over; frame numbers wrapping past 7) through a
// real TCP connection and checks they arrive byte-identical.
func TestRoundTrip(t *testing.T) {
	a, b := tcpPair(t)
	var rc, sc counts
	rx := NewReceiver(a, fastOpts(&rc))
	tx := NewSender(b, fastOpts(&sc))
	ctx := t.Context()
	var msgs [][]byte
	for _, n := range []int{1, 239, 240, 241, 480, 481, 2500} {
		m := hl7("C1", n)
		if n < 100 {
			m = bytes.Repeat([]byte{'x'}, n)
		}
		msgs = append(msgs, m)
	}
	errc := make(chan error, 1)
	go func() {
		for _, m := range msgs {
			if err := tx.Send(ctx, m); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i, want := range msgs {
		got, commit, err := rx.Receive(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("message %d: got %d bytes, want %d, differing", i, len(got), len(want))
		}
		if err := commit(true); err != nil {
			t.Fatal(err)
		}
		if err := commit(true); err == nil {
			t.Fatal("second commit accepted")
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if rc.get("nak_sent") != 0 || sc.get("retransmits") != 0 {
		t.Fatalf("clean line: nak_sent=%d retransmits=%d", rc.get("nak_sent"), sc.get("retransmits"))
	}
	// 2500 bytes need 11 frames; the total proves frames were counted, numbers wrapped.
	wantFrames := 0
	for _, m := range msgs {
		wantFrames += (len(m) + MaxText - 1) / MaxText
	}
	if got := rc.get("frames"); got != uint64(wantFrames) {
		t.Fatalf("frames = %d, want %d", got, wantFrames)
	}
}

// TestFinalFrameHeldUntilCommit proves the promise: the last frame is not
// ACKed before the caller says the message is stored.
func TestFinalFrameHeldUntilCommit(t *testing.T) {
	a, b := tcpPair(t)
	var c counts
	rx := NewReceiver(a, fastOpts(&c))
	d := &device{t, b}
	ch := receiveAsync(t.Context(), rx)
	d.send(ENQ)
	d.expect(ACK)
	d.send(frameOf(1, "MSH|a\r", false))
	d.expect(ACK) // intermediate frames are ACKed at once
	d.send(frameOf(2, "PID|1\r", true))
	r := wait(t, ch)
	if r.err != nil || string(r.msg) != "MSH|a\rPID|1\r" {
		t.Fatalf("Receive = %q, %v", r.msg, r.err)
	}
	d.expectSilence(150 * time.Millisecond)
	if err := r.commit(true); err != nil {
		t.Fatal(err)
	}
	d.expect(ACK)
	d.send(EOT)
	if c.get("nak_sent") != 0 {
		t.Fatalf("nak_sent = %d", c.get("nak_sent"))
	}
}

// TestCommitFalseNAKs: a message the caller could not store is NAKed; the
// device's retransmission comes back whole (earlier frames kept once).
func TestCommitFalseNAKs(t *testing.T) {
	a, b := tcpPair(t)
	var c counts
	rx := NewReceiver(a, fastOpts(&c))
	d := &device{t, b}
	ctx := t.Context()
	ch := receiveAsync(ctx, rx)
	d.send(ENQ)
	d.expect(ACK)
	d.send(frameOf(1, "MSH|a\r", false))
	d.expect(ACK)
	last := frameOf(2, "PID|1\r", true)
	d.send(last)
	r := wait(t, ch)
	if err := r.commit(false); err != nil {
		t.Fatal(err)
	}
	d.expect(NAK)
	ch = receiveAsync(ctx, rx)
	d.send(last)
	r = wait(t, ch)
	if r.err != nil || string(r.msg) != "MSH|a\rPID|1\r" {
		t.Fatalf("after NAK Receive = %q, %v", r.msg, r.err)
	}
	// Not committing and calling Receive again NAKs too.
	ch = receiveAsync(ctx, rx)
	d.expect(NAK)
	d.send(last)
	r = wait(t, ch)
	if r.err != nil || string(r.msg) != "MSH|a\rPID|1\r" {
		t.Fatalf("after implicit NAK Receive = %q, %v", r.msg, r.err)
	}
	r.commit(true)
	d.expect(ACK)
	// The same transmission may carry the next message, numbered on.
	ch = receiveAsync(ctx, rx)
	d.send(frameOf(3, "MSH|b\r", true))
	r = wait(t, ch)
	if string(r.msg) != "MSH|b\r" {
		t.Fatalf("second message %q, %v", r.msg, r.err)
	}
	r.commit(true)
	d.expect(ACK)
	if got := c.get("nak_sent"); got != 2 {
		t.Fatalf("nak_sent = %d, want 2", got)
	}
}

// TestBadFramesNAKed: a corrupted checksum and a wrong frame number are
// NAKed, the retransmission is taken, a repeated frame is ACKed but not
// added twice, and noise between frames is skipped and counted.
func TestBadFramesNAKed(t *testing.T) {
	a, b := tcpPair(t)
	var c counts
	rx := NewReceiver(a, fastOpts(&c))
	d := &device{t, b}
	ch := receiveAsync(t.Context(), rx)
	d.send("noise!", ENQ)
	d.expect(ACK)
	f1 := frameOf(1, "MSH|a\r", false)
	bad := bytes.Clone(f1)
	bad[3] ^= 0x01 // flip a text bit: checksum no longer matches
	d.send(bad)
	d.expect(NAK)
	d.send(frameOf(2, "MSH|a\r", false)) // wrong number: 1 expected
	d.expect(NAK)
	d.send(f1)
	d.expect(ACK)
	d.send(f1) // our ACK "lost": device repeats frame 1
	d.expect(ACK)
	d.send("\x00\xff~", frameOf(2, "PID|1\r", true))
	r := wait(t, ch)
	if r.err != nil || string(r.msg) != "MSH|a\rPID|1\r" {
		t.Fatalf("Receive = %q, %v", r.msg, r.err)
	}
	r.commit(true)
	d.expect(ACK)
	if got := c.get("nak_sent"); got != 2 {
		t.Errorf("nak_sent = %d, want 2", got)
	}
	if got := c.get("duplicates"); got != 1 {
		t.Errorf("duplicates = %d, want 1", got)
	}
	if got := c.get("noise_bytes"); got != uint64(len("noise!")+3) {
		t.Errorf("noise_bytes = %d, want %d", got, len("noise!")+3)
	}
}

// TestAbortsDropPartial: EOT in the middle of a message, a silent device
// and a restart with ENQ all drop the partial text; the next message is
// whole and clean.
func TestAbortsDropPartial(t *testing.T) {
	a, b := tcpPair(t)
	var c counts
	opt := fastOpts(&c)
	opt.FrameTimeout = 100 * time.Millisecond
	rx := NewReceiver(a, opt)
	d := &device{t, b}
	ch := receiveAsync(t.Context(), rx)

	d.send(ENQ)
	d.expect(ACK)
	d.send(frameOf(1, "OLD1\r", false))
	d.expect(ACK)
	d.send(EOT) // device abandons

	d.send(ENQ)
	d.expect(ACK)
	d.send(frameOf(1, "OLD2\r", false))
	d.expect(ACK)
	// Silence past the frame timeout: the receiver abandons the transmission.
	deadline := time.Now().Add(3 * time.Second)
	for c.get("timeouts") == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if c.get("timeouts") == 0 {
		t.Fatal("frame timeout never fired")
	}
	d.send(STX, "1OLD3") // a frame cut short ...
	d.send(ENQ)          // ... and the device starts over
	d.expect(ACK)
	d.send(frameOf(1, "MSH|new\r", true))
	r := wait(t, ch)
	if r.err != nil || string(r.msg) != "MSH|new\r" {
		t.Fatalf("Receive = %q, %v", r.msg, r.err)
	}
	r.commit(true)
	d.expect(ACK)
	d.send(EOT)
	if got := c.get("aborted"); got != 2 {
		t.Errorf("aborted = %d, want 2 (EOT and timeout)", got)
	}
}

func TestBusyNAKsENQ(t *testing.T) {
	a, b := tcpPair(t)
	var c counts
	busy := true
	opt := fastOpts(&c)
	opt.Busy = func() bool { v := busy; busy = false; return v }
	rx := NewReceiver(a, opt)
	d := &device{t, b}
	ch := receiveAsync(t.Context(), rx)
	d.send(ENQ)
	d.expect(NAK)
	d.send(ENQ)
	d.expect(ACK)
	d.send(frameOf(1, "MSH|x\r", true))
	r := wait(t, ch)
	r.commit(true)
	d.expect(ACK)
	if c.get("busy") != 1 {
		t.Fatalf("busy = %d", c.get("busy"))
	}
}

func TestOversizeNAKed(t *testing.T) {
	a, b := tcpPair(t)
	var c counts
	opt := fastOpts(&c)
	opt.MaxMessageBytes = 300
	rx := NewReceiver(a, opt)
	d := &device{t, b}
	ctx := t.Context()
	ch := receiveAsync(ctx, rx)
	d.send(ENQ)
	d.expect(ACK)
	d.send(AppendFrame(nil, 1, bytes.Repeat([]byte{'a'}, 240), false))
	d.expect(ACK)
	last := AppendFrame(nil, 2, bytes.Repeat([]byte{'b'}, 100), true)
	d.send(last)
	d.expect(NAK)
	r := wait(t, ch)
	if !errors.Is(r.err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", r.err)
	}
	// The retransmission is still too large (the earlier frames count).
	ch = receiveAsync(ctx, rx)
	d.send(last)
	d.expect(NAK)
	if r := wait(t, ch); !errors.Is(r.err, ErrTooLarge) {
		t.Fatalf("retransmission err = %v, want ErrTooLarge", r.err)
	}
	// The device gives up; a small message then goes through.
	ch = receiveAsync(ctx, rx)
	d.send(EOT, ENQ)
	d.expect(ACK)
	d.send(frameOf(1, "MSH|ok\r", true))
	r = wait(t, ch)
	if r.err != nil || string(r.msg) != "MSH|ok\r" {
		t.Fatalf("Receive = %q, %v", r.msg, r.err)
	}
	r.commit(true)
	d.expect(ACK)
}

// TestReceiveStopsOnCancel: a Receive blocked on a silent line returns
// promptly when its context ends, and so does the goroutine running it.
func TestReceiveStopsOnCancel(t *testing.T) {
	a, _ := tcpPair(t)
	var c counts
	rx := NewReceiver(a, fastOpts(&c))
	ctx, cancel := context.WithCancel(t.Context())
	ch := receiveAsync(ctx, rx)
	time.Sleep(30 * time.Millisecond)
	cancel()
	r := wait(t, ch)
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", r.err)
	}
}

func TestReceiveLinkClosed(t *testing.T) {
	a, b := tcpPair(t)
	var c counts
	rx := NewReceiver(a, fastOpts(&c))
	b.Close()
	_, _, err := rx.Receive(t.Context())
	if !errors.Is(err, ErrLinkClosed) {
		t.Fatalf("err = %v, want ErrLinkClosed", err)
	}
}

// TestOverlongFrameNAKed: a frame past MaxFrameText (a lost ETX, noise
// without LF) is read to its LF and NAKed; memory stays bounded.
func TestOverlongFrameNAKed(t *testing.T) {
	a, b := tcpPair(t)
	var c counts
	opt := fastOpts(&c)
	opt.MaxFrameText = 300
	rx := NewReceiver(a, opt)
	d := &device{t, b}
	ch := receiveAsync(t.Context(), rx)
	d.send(ENQ)
	d.expect(ACK)
	d.send(AppendFrame(nil, 1, bytes.Repeat([]byte{'z'}, 5000), true))
	d.expect(NAK)
	d.send(AppendFrame(nil, 1, bytes.Repeat([]byte{'z'}, 300), true))
	r := wait(t, ch)
	if cap(rx.frame) > 1024 { // read after Receive returned: no race
		t.Fatalf("frame buffer grew to %d bytes", cap(rx.frame))
	}
	if r.err != nil || len(r.msg) != 300 {
		t.Fatalf("Receive = %d bytes, %v", len(r.msg), r.err)
	}
	r.commit(true)
	d.expect(ACK)
}
