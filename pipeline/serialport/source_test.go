package serialport

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/lis01"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// sendFunc sends one message as a device would and returns nil only when
// the device got a positive acknowledgement.
type sendFunc func(msg []byte) error

// mllpSender is an MLLP device: frame out, wait for the HL7 ACK.
func mllpSender(d *ptyDevice) sendFunc {
	r := mllp.NewReader(d.m, 0)
	return func(msg []byte) error {
		code, _, err := mllpExchange(d, r, msg)
		if err != nil {
			return err
		}
		if code != "AA" {
			return fmt.Errorf("ACK %s", code)
		}
		return nil
	}
}

func mllpExchange(d *ptyDevice, r *mllp.Reader, msg []byte) (code, acked string, err error) {
	if err := mllp.WriteFrame(d.m, msg); err != nil {
		return "", "", err
	}
	d.m.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := r.ReadFrame()
	if err != nil {
		return "", "", err
	}
	code, acked, _, err = hl7.ParseACK(f.Data)
	return code, acked, err
}

// deviceOpts are a LIS01 device's timeouts: generous replies (the host
// stores before it answers), quick polls.
var deviceOpts = lis01.Options{ReplyTimeout: 5 * time.Second, Poll: 20 * time.Millisecond, BusyDelay: 10 * time.Millisecond}

// lisSender is a LIS01-A2 device.
func lisSender(d *ptyDevice) sendFunc {
	s := lis01.NewSender(d.m, deviceOpts)
	return func(msg []byte) error { return s.Send(d.t.Context(), msg) }
}

var framings = []struct {
	name   string
	sender func(*ptyDevice) sendFunc
}{
	{FramingMLLP, mllpSender},
	{FramingLIS01, lisSender},
}

// Test500Messages: 500 messages of 100 B to 3 KiB in each framing, with
// line noise between some of them, reach intake byte-identical and in
// order; the noise is skipped and counted exactly.
func Test500Messages(t *testing.T) {
	for _, fr := range framings {
		t.Run(fr.name, func(t *testing.T) {
			f := startSource(t, fr.name, true, nil, nil)
			send := fr.sender(f.dev)
			noiseTotal := 0
			for i := range 500 {
				if i%10 == 3 {
					nz := noise(i)
					f.dev.write(nz)
					noiseTotal += len(nz)
				}
				if err := send(message(i)); err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
			}
			got := f.intake.stored()
			if len(got) != 500 {
				t.Fatalf("intake got %d messages, want 500", len(got))
			}
			for i, m := range got {
				if !bytes.Equal(m, message(i)) {
					t.Fatalf("message %d differs from what the device sent", i)
				}
			}
			c := f.comp
			if c.Counter(health.CounterMessages) != 500 || c.Counter(health.CounterNoiseBytes) != uint64(noiseTotal) ||
				c.Counter(health.CounterNAKSent) != 0 || c.Counter(health.CounterReopens) != 0 {
				t.Fatalf("counters messages=%d noise_bytes=%d (want %d) nak_sent=%d reopens=%d",
					c.Counter(health.CounterMessages), c.Counter(health.CounterNoiseBytes), noiseTotal, c.Counter(health.CounterNAKSent), c.Counter(health.CounterReopens))
			}
			if c.State() != health.Up {
				t.Fatalf("state %s", c.State())
			}
		})
	}
}

// TestLIS01ChecksumAndHeldACK works the line byte by byte: a corrupted
// frame is NAKed, its retransmission taken, and the final ACK comes only
// after intake has returned.
func TestLIS01ChecksumAndHeldACK(t *testing.T) {
	storing := make(chan struct{})
	stored := make(chan struct{})
	f := startSource(t, FramingLIS01, true, func([]byte) flow.Code {
		close(storing)
		<-stored
		return flow.Accepted
	}, nil)
	d := f.dev
	expect := func(want byte) {
		t.Helper()
		b, err := d.readByte(5 * time.Second)
		if err != nil || b != want {
			t.Fatalf("device read 0x%02X, %v; want 0x%02X", b, err, want)
		}
	}
	msg := message(7)
	frame1 := lis01.AppendFrame(nil, 1, msg[:240], false)
	frame2 := lis01.AppendFrame(nil, 2, msg[240:], true)
	d.write([]byte{lis01.ENQ})
	expect(lis01.ACK)
	bad := bytes.Clone(frame1)
	bad[len(bad)-3] ^= 0x01 // a checksum digit hit by noise
	d.write(bad)
	expect(lis01.NAK)
	d.write(frame1)
	expect(lis01.ACK)
	d.write(frame2)
	<-storing
	if b, err := d.readByte(150 * time.Millisecond); err == nil {
		t.Fatalf("device got 0x%02X while the message was being stored", b)
	}
	close(stored)
	expect(lis01.ACK)
	d.write([]byte{lis01.EOT})
	waitFor(t, "the message", func() bool { return f.intake.count() == 1 })
	if !bytes.Equal(f.intake.stored()[0], msg) {
		t.Fatal("stored message differs")
	}
	if n := f.comp.Counter(health.CounterNAKSent); n != 1 {
		t.Fatalf("nak_sent = %d, want 1", n)
	}
}

// TestRefusals: intake's AE and AR reach the device: as HL7 ACKs on MLLP,
// as NAKs on LIS01 (AE: the retransmission is accepted; AR: the device
// gives up after six tries). Refused messages are not stored, and counted.
func TestRefusals(t *testing.T) {
	decide := func() func([]byte) flow.Code {
		var mu sync.Mutex
		failedOnce := false
		return func(raw []byte) flow.Code {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case bytes.Contains(raw, []byte("|MSG-0001|")):
				return flow.Rejected
			case bytes.Contains(raw, []byte("|MSG-0002|")) && !failedOnce:
				failedOnce = true
				return flow.RetryLater
			}
			return flow.Accepted
		}
	}
	t.Run(FramingMLLP, func(t *testing.T) {
		f := startSource(t, FramingMLLP, true, decide(), nil)
		r := mllp.NewReader(f.dev.m, 0)
		for i, want := range []string{"AR", "AE", "AA", "AA"} {
			code, acked, err := mllpExchange(f.dev, r, message(i+1))
			if err != nil || code != want || acked != fmt.Sprintf("MSG-%04d", i+1) {
				t.Fatalf("message %d: ACK %s for %s, %v; want %s", i+1, code, acked, err, want)
			}
		}
		if n := f.intake.count(); n != 2 {
			t.Fatalf("stored %d, want 2 (MSG-0002 resent, MSG-0003)", n)
		}
		if n := f.comp.Counter(health.CounterRefused); n != 2 {
			t.Fatalf("refused = %d, want 2", n)
		}
	})
	t.Run(FramingLIS01, func(t *testing.T) {
		f := startSource(t, FramingLIS01, true, decide(), nil)
		s := lis01.NewSender(f.dev.m, deviceOpts)
		if err := s.Send(t.Context(), message(1)); !errors.Is(err, lis01.ErrRefused) {
			t.Fatalf("rejected message: Send = %v, want ErrRefused", err)
		}
		if err := s.Send(t.Context(), message(2)); err != nil {
			t.Fatalf("message failing once: %v", err)
		}
		if err := s.Send(t.Context(), message(3)); err != nil {
			t.Fatal(err)
		}
		got := f.intake.stored()
		if len(got) != 2 || !bytes.Equal(got[0], message(2)) || !bytes.Equal(got[1], message(3)) {
			t.Fatalf("stored %d messages, want MSG-0002 and MSG-0003", len(got))
		}
		if n, want := f.comp.Counter(health.CounterNAKSent), uint64(lis01.DefaultMaxTries+1); n != want {
			t.Fatalf("nak_sent = %d, want %d", n, want)
		}
		if n := f.comp.Counter(health.CounterRefused); n != uint64(lis01.DefaultMaxTries+1) {
			t.Fatalf("refused = %d", n)
		}
	})
}

// TestOversize: a message over max_message_bytes is refused (AR naming its
// control ID on MLLP; NAK on LIS01), not stored, counted; the line then
// carries on.
func TestOversize(t *testing.T) {
	small := func(c *Config, _ *Options) { c.MaxMessageBytes = 512 }
	t.Run(FramingMLLP, func(t *testing.T) {
		f := startSource(t, FramingMLLP, true, nil, small)
		r := mllp.NewReader(f.dev.m, 0)
		code, acked, err := mllpExchange(f.dev, r, sized(1, 4000))
		if err != nil || code != "AR" || acked != "MSG-0001" {
			t.Fatalf("oversize: ACK %s for %q, %v", code, acked, err)
		}
		if code, _, err := mllpExchange(f.dev, r, sized(2, 500)); err != nil || code != "AA" {
			t.Fatalf("next message: %s, %v", code, err)
		}
		if f.intake.count() != 1 || f.comp.Counter(health.CounterOversize) != 1 {
			t.Fatalf("stored %d, oversize %d", f.intake.count(), f.comp.Counter(health.CounterOversize))
		}
	})
	t.Run(FramingLIS01, func(t *testing.T) {
		f := startSource(t, FramingLIS01, true, nil, small)
		s := lis01.NewSender(f.dev.m, deviceOpts)
		if err := s.Send(t.Context(), sized(1, 4000)); !errors.Is(err, lis01.ErrRefused) {
			t.Fatalf("oversize: %v", err)
		}
		if err := s.Send(t.Context(), sized(2, 500)); err != nil {
			t.Fatal(err)
		}
		if f.intake.count() != 1 || f.comp.Counter(health.CounterOversize) == 0 {
			t.Fatalf("stored %d, oversize %d", f.intake.count(), f.comp.Counter(health.CounterOversize))
		}
	})
}

// TestYankMidStream: the adapter is pulled while a message is being
// stored (its ACK cannot reach the device) and a new one appears at the
// same path. The source goes Missing, reopens, and every message arrives:
// those ACKed before the yank once, the one in flight twice (at least once,
// never lost), the rest once, in order.
func TestYankMidStream(t *testing.T) {
	const n, at = 300, 150
	for _, fr := range framings {
		t.Run(fr.name, func(t *testing.T) {
			reached, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			mark := fmt.Appendf(nil, "|MSG-%04d|", at)
			f := startSource(t, fr.name, true, func(raw []byte) flow.Code {
				if bytes.Contains(raw, mark) {
					once.Do(func() { close(reached); <-release })
				}
				return flow.Accepted
			}, nil)
			newDev := make(chan *ptyDevice, 1)
			devDone := make(chan error, 1)
			go func() { // the device: resend until acknowledged, like a real one
				dev := f.dev
				send := fr.sender(dev)
				for i := 0; i < n; {
					if err := send(message(i)); err != nil {
						select {
						case dev = <-newDev:
						case <-time.After(10 * time.Second):
							devDone <- fmt.Errorf("message %d: %v, and no new device came", i, err)
							return
						}
						send = fr.sender(dev)
						continue
					}
					i++
				}
				devDone <- nil
			}()
			select {
			case <-reached:
			case <-time.After(10 * time.Second):
				t.Fatal("message in flight never reached intake")
			}
			f.dev.yank()
			close(release)
			waitState(t, f.comp, health.Missing)
			newDev <- newPTY(t, f.link)
			if err := <-devDone; err != nil {
				t.Fatal(err)
			}
			var want [][]byte
			for i := range n {
				want = append(want, message(i))
				if i == at {
					want = append(want, message(i))
				}
			}
			got := f.intake.stored()
			if len(got) != len(want) {
				t.Fatalf("stored %d messages, want %d", len(got), len(want))
			}
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("stored message %d is not the one expected", i)
				}
			}
			if r := f.comp.Counter(health.CounterReopens); r != 1 {
				t.Fatalf("reopens = %d, want 1", r)
			}
			waitState(t, f.comp, health.Up)
		})
	}
}

// TestYankWhileIdle: the adapter is pulled while the line is quiet, so
// nothing is written that could fail: the empty reads alone must reveal it.
func TestYankWhileIdle(t *testing.T) {
	for _, fr := range framings {
		t.Run(fr.name, func(t *testing.T) {
			f := startSource(t, fr.name, true, nil, nil)
			for i := range 10 {
				if err := fr.sender(f.dev)(message(i)); err != nil {
					t.Fatal(err)
				}
			}
			f.dev.yank()
			waitState(t, f.comp, health.Missing)
			f.dev = newPTY(t, f.link)
			waitState(t, f.comp, health.Up)
			send := fr.sender(f.dev)
			for i := 10; i < 20; i++ {
				if err := send(message(i)); err != nil {
					t.Fatal(err)
				}
			}
			got := f.intake.stored()
			if len(got) != 20 || !bytes.Equal(got[19], message(19)) {
				t.Fatalf("stored %d", len(got))
			}
			if r := f.comp.Counter(health.CounterReopens); r != 1 {
				t.Fatalf("reopens = %d, want 1", r)
			}
		})
	}
}

// TestWaitsForDevice: started with no device at the path, the source is
// Missing, polls, and comes Up when the adapter is plugged in. Its liveness
// loop beats both while waiting and while the open line is idle.
func TestWaitsForDevice(t *testing.T) {
	var mu sync.Mutex
	clock := time.Unix(1e9, 0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func() { mu.Lock(); clock = clock.Add(time.Hour); mu.Unlock() }
	reg := health.NewRegistry("test", "0", now)
	loop := reg.Loop("serial-analyzer")
	beating := func() {
		t.Helper()
		advance()
		waitFor(t, "a beat", func() bool { return len(reg.Stalled(time.Minute)) == 0 })
	}
	f := startSource(t, FramingMLLP, false, nil, func(_ *Config, o *Options) { o.Loop = loop })
	waitState(t, f.comp, health.Missing)
	beating()
	f.dev = newPTY(t, f.link)
	waitState(t, f.comp, health.Up)
	beating()
	if err := mllpSender(f.dev)(message(1)); err != nil {
		t.Fatal(err)
	}
	if f.intake.count() != 1 || f.comp.Counter(health.CounterReopens) != 0 {
		t.Fatalf("stored %d, reopens %d", f.intake.count(), f.comp.Counter(health.CounterReopens))
	}
}

// TestStopsWhileMissing: Run returns promptly when cancelled while it
// waits for a device (the fixture's cleanup fails otherwise).
func TestStopsWhileMissing(t *testing.T) {
	f := startSource(t, FramingLIS01, false, nil, nil)
	waitState(t, f.comp, health.Missing)
	f.stop()
}

// TestFollowsRepointedPath: the path comes to name another device while
// the old one is still alive (adapter moved, udev relinked): the source
// notices from the path alone, without a hang-up, and moves over.
func TestFollowsRepointedPath(t *testing.T) {
	f := startSource(t, FramingLIS01, true, nil, nil)
	old := f.dev
	if err := lisSender(old)(message(1)); err != nil {
		t.Fatal(err)
	}
	f.dev = newPTY(t, f.link)
	waitFor(t, "a reopen", func() bool { return f.comp.Counter(health.CounterReopens) == 1 })
	if err := lisSender(f.dev)(message(2)); err != nil {
		t.Fatal(err)
	}
	if f.intake.count() != 2 {
		t.Fatalf("stored %d, want 2", f.intake.count())
	}
}

// TestLineTimeoutIsNotEOF checks the tarm/serial traps directly: a read
// timeout is neither data nor end of stream, a deadline is honoured, and a
// hang-up becomes a device error promptly.
func TestLineTimeoutIsNotEOF(t *testing.T) {
	link := t.TempDir() + "/tty"
	dev := newPTY(t, link)
	cfg := testConfig(link, FramingMLLP)
	cfg.SetDefaults()
	l, err := openLine(t.Context(), &cfg, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	buf := make([]byte, 16)
	start := time.Now()
	l.SetReadDeadline(start.Add(3 * readTimeout))
	if n, err := l.Read(buf); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle read = %d, %v; want deadline exceeded", n, err)
	}
	if el := time.Since(start); el < 3*readTimeout {
		t.Fatalf("idle read returned after %v, before its deadline", el)
	}
	l.SetReadDeadline(time.Time{})
	dev.write([]byte("hi"))
	if n, err := l.Read(buf); err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("read = %q, %v", buf[:n], err)
	}
	dev.yank()
	var de *deviceError
	l.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := l.Read(buf); !errors.As(err, &de) {
		t.Fatalf("read after hang-up = %v, want a device error", err)
	}
	if _, err := l.Write([]byte("x")); !errors.As(err, &de) {
		t.Fatalf("write after hang-up = %v, want a device error", err)
	}
}

// TestNotASerialDevice: a path that exists but is no serial port is Down
// (a configuration mistake, not an unplugged adapter), with an error saying
// so, and is tried again until it is fixed.
func TestNotASerialDevice(t *testing.T) {
	f := startSource(t, FramingMLLP, false, nil, nil)
	if err := os.WriteFile(f.link, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitState(t, f.comp, health.Down)
	snap := f.reg.Snapshot()
	if c, _ := snap.Component(health.Source, "analyzer"); !strings.Contains(c.LastError, "not a character device") {
		t.Fatalf("last error %q", c.LastError)
	}
	f.dev = newPTY(t, f.link)
	waitState(t, f.comp, health.Up)
}
