package lis01

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// Sender sends messages to a device. It is not safe for concurrent use.
type Sender struct {
	link Link
	in   *reader
	opt  Options
	buf  []byte
}

// NewSender makes a sender on link.
func NewSender(link Link, opt Options) *Sender {
	opt = opt.withDefaults()
	return &Sender{link: link, in: newReader(link, opt.Poll), opt: opt}
}

// Send delivers msg as one transmission: ENQ, frames of at most 240 text
// bytes (ETB, then ETX on the last), EOT. It returns nil only when the
// device ACKed every frame. ErrBusy, ErrContention, ErrRefused and
// ErrTimeout (test with errors.Is) say the device did not take it; other
// errors come from the link or ctx. msg must not contain control
// characters the protocol reserves (see CheckText).
func (s *Sender) Send(ctx context.Context, msg []byte) error {
	if len(msg) == 0 {
		return errors.New("lis01: refusing to send an empty message")
	}
	if err := CheckText(msg); err != nil {
		return err
	}
	if err := s.establish(ctx); err != nil {
		return err
	}
	fn := 1
	for off := 0; off < len(msg); off += MaxText {
		end := min(off+MaxText, len(msg))
		s.buf = AppendFrame(s.buf[:0], fn, msg[off:end], end == len(msg))
		if err := s.sendFrame(ctx, s.buf, fn); err != nil {
			if ctx.Err() == nil {
				_ = s.eot() // release the line; the error that matters is err
			}
			return err
		}
		fn = (fn + 1) % 8
	}
	return s.eot()
}

func (s *Sender) eot() error { return writeAll(s.link, []byte{EOT}) }

// establish sends ENQ until ACKed. NAK means busy: wait BusyDelay and ask
// again, MaxTries times in all. ENQ from the device means contention.
func (s *Sender) establish(ctx context.Context) error {
	for try := 1; ; try++ {
		if err := writeAll(s.link, []byte{ENQ}); err != nil {
			return err
		}
		b, err := s.awaitReply(ctx, true)
		if err != nil {
			if errors.Is(err, ErrTimeout) {
				_ = s.eot()
				return fmt.Errorf("%w: no answer to ENQ within %v; check the cable, the baud rate and that the device is on line", ErrTimeout, s.opt.ReplyTimeout)
			}
			return err
		}
		switch b {
		case ACK:
			return nil
		case ENQ:
			s.opt.Count(health.CounterContention, 1)
			return fmt.Errorf("%w: the device sent ENQ at the same time; it has priority, retry later", ErrContention)
		}
		// NAK: busy.
		s.opt.Count(health.CounterBusy, 1)
		if try >= s.opt.MaxTries {
			return fmt.Errorf("%w: ENQ answered NAK %d times; the device is not ready to receive, retry later", ErrBusy, try)
		}
		t := time.NewTimer(s.opt.BusyDelay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// sendFrame transmits one frame until ACKed, MaxTries times at most. EOT
// in reply is the receiver asking us to stop soon; it also acknowledges the
// frame and we finish the message.
func (s *Sender) sendFrame(ctx context.Context, f []byte, fn int) error {
	for try := 1; ; try++ {
		if err := writeAll(s.link, f); err != nil {
			return err
		}
		b, err := s.awaitReply(ctx, false)
		if err != nil {
			if errors.Is(err, ErrTimeout) {
				return fmt.Errorf("%w: no ACK or NAK for frame %d within %v; the transmission was abandoned", ErrTimeout, fn, s.opt.ReplyTimeout)
			}
			return err
		}
		if b == ACK || b == EOT {
			return nil
		}
		if try >= s.opt.MaxTries {
			return fmt.Errorf("%w: frame %d NAKed %d times; the transmission was abandoned (check the line for noise and the device's settings)", ErrRefused, fn, try)
		}
		s.opt.Count(health.CounterRetransmits, 1)
	}
}

// awaitReply reads until a reply byte arrives: ACK or NAK, plus EOT after
// a frame or ENQ after our ENQ. Anything else is noise and skipped.
func (s *Sender) awaitReply(ctx context.Context, enq bool) (byte, error) {
	deadline := time.Now().Add(s.opt.ReplyTimeout)
	for {
		b, err := s.in.next(ctx, deadline)
		if err != nil {
			return 0, err
		}
		switch {
		case b == ACK, b == NAK, b == EOT && !enq, b == ENQ && enq:
			return b, nil
		}
		s.opt.Count(health.CounterNoiseBytes, 1)
	}
}
