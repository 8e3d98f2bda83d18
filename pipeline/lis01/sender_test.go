package lis01

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// readFrameAt reads one whole frame (STX..LF) from the device side.
func (d *device) readFrame() []byte {
	d.t.Helper()
	var f []byte
	for {
		b, err := d.read(3 * time.Second)
		if err != nil {
			d.t.Fatalf("reading a frame: %v (got %q)", err, f)
		}
		f = append(f, b)
		if b == LF {
			return f
		}
	}
}

func sendAsync(s *Sender, t *testing.T, msg []byte) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- s.Send(t.Context(), msg) }()
	return ch
}

func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Send did not return")
	}
	return nil
}

// TestSenderRetransmitsNAKed: NAKed frames go again identically; noise in
// the reply is skipped; EOT after a frame counts as its ACK.
func TestSenderRetransmitsNAKed(t *testing.T) {
	a, b := tcpPair(t)
	var c counts
	tx := NewSender(a, fastOpts(&c))
	d := &device{t, b}
	msg := hl7("S1", 300) // two frames
	ch := sendAsync(tx, t, msg)
	d.expect(ENQ)
	d.send("~~", ACK)
	f1 := d.readFrame()
	d.send(NAK)
	if again := d.readFrame(); !bytes.Equal(again, f1) {
		t.Fatalf("retransmission differs: %q vs %q", again, f1)
	}
	d.send(ACK)
	f2 := d.readFrame()
	d.send(EOT)
	d.expect(EOT)
	if err := waitErr(t, ch); err != nil {
		t.Fatal(err)
	}
	p1, err := parseFrame(f1[1 : len(f1)-1])
	if err != nil || p1.fn != 1 || p1.final || len(p1.text) != MaxText {
		t.Fatalf("frame 1 = %+v, %v", p1, err)
	}
	p2, err := parseFrame(f2[1 : len(f2)-1])
	if err != nil || p2.fn != 2 || !p2.final {
		t.Fatalf("frame 2 = %+v, %v", p2, err)
	}
	if got := append(p1.text, p2.text...); !bytes.Equal(got, msg) {
		t.Fatal("frames do not rebuild the message")
	}
	if c.get("retransmits") != 1 || c.get("noise_bytes") != 2 {
		t.Fatalf("retransmits=%d noise=%d", c.get("retransmits"), c.get("noise_bytes"))
	}
}

func TestSenderGivesUpAfterSixNAKs(t *testing.T) {
	a, b := tcpPair(t)
	var c counts
	tx := NewSender(a, fastOpts(&c))
	d := &device{t, b}
	ch := sendAsync(tx, t, []byte("MSH|x\r"))
	d.expect(ENQ)
	d.send(ACK)
	for range DefaultMaxTries {
		d.readFrame()
		d.send(NAK)
	}
	d.expect(EOT)
	if err := waitErr(t, ch); !errors.Is(err, ErrRefused) {
		t.Fatalf("err = %v, want ErrRefused", err)
	}
}

func TestSenderTimeouts(t *testing.T) {
	a, b := tcpPair(t)
	var c counts
	opt := fastOpts(&c)
	opt.ReplyTimeout = 80 * time.Millisecond
	tx := NewSender(a, opt)
	d := &device{t, b}
	// Silent device: ENQ unanswered.
	ch := sendAsync(tx, t, []byte("MSH|x\r"))
	d.expect(ENQ)
	d.expect(EOT)
	if err := waitErr(t, ch); !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	// Frame unanswered.
	ch = sendAsync(tx, t, []byte("MSH|x\r"))
	d.expect(ENQ)
	d.send(ACK)
	d.readFrame()
	d.expect(EOT)
	if err := waitErr(t, ch); !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
}

func TestSenderEstablishment(t *testing.T) {
	a, b := tcpPair(t)
	var c counts
	tx := NewSender(a, fastOpts(&c))
	d := &device{t, b}
	// Contention: the device's ENQ wins.
	ch := sendAsync(tx, t, []byte("MSH|x\r"))
	d.expect(ENQ)
	d.send(ENQ)
	if err := waitErr(t, ch); !errors.Is(err, ErrContention) {
		t.Fatalf("err = %v, want ErrContention", err)
	}
	// Busy once, then ready.
	ch = sendAsync(tx, t, []byte("MSH|x\r"))
	d.expect(ENQ)
	d.send(NAK)
	d.expect(ENQ)
	d.send(ACK)
	d.readFrame()
	d.send(ACK)
	d.expect(EOT)
	if err := waitErr(t, ch); err != nil {
		t.Fatal(err)
	}
	// Busy for good.
	ch = sendAsync(tx, t, []byte("MSH|x\r"))
	for range DefaultMaxTries {
		d.expect(ENQ)
		d.send(NAK)
	}
	if err := waitErr(t, ch); !errors.Is(err, ErrBusy) {
		t.Fatalf("err = %v, want ErrBusy", err)
	}
}

func TestSenderRefusesControlCharacters(t *testing.T) {
	a, b := tcpPair(t)
	tx := NewSender(a, Options{})
	for _, m := range [][]byte{[]byte("MSH|x\r\nPID|1\r\n"), []byte("MSH|\x02"), nil} {
		if err := tx.Send(t.Context(), m); err == nil {
			t.Fatalf("Send(%q) accepted", m)
		}
	}
	d := &device{t, b}
	d.expectSilence(50 * time.Millisecond) // nothing went on the line
}
