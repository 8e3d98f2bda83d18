package lis01

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// Receiver takes messages from a device. It is not safe for concurrent use:
// one goroutine calls Receive and the commit it returns, in turn.
type Receiver struct {
	link Link
	in   *reader
	opt  Options

	inTx     bool      // between an ACKed ENQ and EOT
	fn       int       // frame number expected next
	accepted int       // frames accepted in this transmission
	text     []byte    // text of the intermediate frames of the current message
	size     int       // bytes of the current message, counted even when dropped
	oversize bool      // the current message went past MaxMessageBytes
	lastAt   time.Time // when we last answered; the frame timeout runs from it
	pending  bool      // a final frame waits for commit
	gen      uint64    // which Receive the pending commit belongs to
	frame    []byte    // scratch for the frame being read
}

// NewReceiver makes a receiver on link.
func NewReceiver(link Link, opt Options) *Receiver {
	opt = opt.withDefaults()
	return &Receiver{link: link, in: newReader(link, opt.Poll), opt: opt}
}

// Receive waits for the next complete message and returns its text (frames
// joined, framing removed) with the final frame still unanswered. The caller
// stores the message and then calls commit(true) to ACK that frame, or
// commit(false) to NAK it so that the device sends it again. Calling Receive
// again without committing NAKs it. commit must be called only once.
//
// Protocol trouble (bad frames, noise, timeouts, aborted transmissions) is
// handled and counted inside; Receive returns an error only when ctx ends,
// the link fails, or (after NAKing it itself) a message exceeds
// MaxMessageBytes, which is ErrTooLarge and not fatal.
func (r *Receiver) Receive(ctx context.Context) (msg []byte, commit func(ok bool) error, err error) {
	if r.pending {
		if err := r.settle(false); err != nil {
			return nil, nil, err
		}
	}
	for {
		if !r.inTx {
			if err := r.awaitENQ(ctx); err != nil {
				return nil, nil, err
			}
			continue
		}
		f, got, err := r.nextFrame(ctx)
		if err != nil {
			return nil, nil, err
		}
		if !got {
			continue
		}
		if next, err := r.inSequence(f); err != nil {
			return nil, nil, err
		} else if !next {
			continue
		}
		r.collect(f)
		if !f.final {
			if err := r.advance(); err != nil {
				return nil, nil, err
			}
			continue
		}
		if r.oversize {
			return nil, nil, r.refuseOversize(f)
		}
		msg, commit = r.hold(f)
		return msg, commit, nil
	}
}

// nextFrame reads, inside a transmission, up to the next well-formed frame.
// What the link throws up on the way (EOT, an ENQ that restarts, noise,
// timeouts, bad frames) it answers and counts here, and then reports
// got=false: there is no frame to act on and the caller reads on.
func (r *Receiver) nextFrame(ctx context.Context) (f frame, got bool, err error) {
	deadline := r.lastAt.Add(r.opt.FrameTimeout)
	b, err := r.in.next(ctx, deadline)
	if errors.Is(err, ErrTimeout) {
		r.opt.Count(health.CounterTimeouts, 1)
		r.abort("no frame within the frame timeout")
		return frame{}, false, nil
	}
	if err != nil {
		return frame{}, false, err
	}
	switch b {
	case EOT:
		r.endTx()
		return frame{}, false, nil
	case ENQ:
		// The device gave up on this transmission without EOT (or our
		// EOT was lost) and starts again: follow it.
		r.abort("ENQ inside a transmission")
		return frame{}, false, r.establish()
	case STX:
	default:
		r.opt.Count(health.CounterNoiseBytes, 1)
		return frame{}, false, nil
	}
	f, err = r.readFrame(ctx, deadline)
	switch {
	case errors.Is(err, errEOTInFrame):
		r.endTx()
		return frame{}, false, nil
	case errors.Is(err, ErrTimeout):
		r.opt.Count(health.CounterTimeouts, 1)
		r.abort("frame not finished within the frame timeout")
		return frame{}, false, nil
	case errors.Is(err, errBadFrame):
		r.opt.Log.Debug("lis01: NAK bad frame", "reason", err.Error())
		return frame{}, false, r.reply(NAK)
	case err != nil:
		return frame{}, false, err
	}
	return f, true, nil
}

// inSequence reports whether f carries the frame number expected next. A
// repeat of the frame accepted last (our ACK was lost) is ACKed again, any
// other number NAKed; both report false.
func (r *Receiver) inSequence(f frame) (bool, error) {
	if f.fn == r.fn {
		return true, nil
	}
	if r.accepted > 0 && f.fn == (r.fn+7)%8 {
		r.opt.Count(health.CounterDuplicates, 1)
		return false, r.reply(ACK)
	}
	r.opt.Log.Debug("lis01: NAK frame number", "got", f.fn, "want", r.fn)
	return false, r.reply(NAK)
}

// collect adds an accepted frame to the message. Past MaxMessageBytes the
// text is dropped but the size still counted, so the error can say how
// large the message was.
func (r *Receiver) collect(f frame) {
	r.opt.Count(health.CounterFrames, 1)
	r.size += len(f.text)
	if r.size > r.opt.MaxMessageBytes {
		if !r.oversize {
			r.oversize, r.text = true, nil
		}
	} else {
		r.text = append(r.text, f.text...)
	}
}

// refuseOversize NAKs the final frame of a message past MaxMessageBytes, so
// the device keeps it, and returns ErrTooLarge (or the link's error).
func (r *Receiver) refuseOversize(f frame) error {
	size := r.size
	r.size -= len(f.text) // a retransmission of this frame counts again
	r.opt.Count(health.CounterOversize, 1)
	if err := r.reply(NAK); err != nil {
		return err
	}
	return fmt.Errorf("%w: a message of at least %d bytes arrived but the limit (max_message_bytes) is %d; its last frame was NAKed, so the device keeps it: raise the limit or have the device send smaller messages",
		ErrTooLarge, size, r.opt.MaxMessageBytes)
}

// hold returns the complete message, whose final frame f stays unanswered
// until the commit it returns is called.
func (r *Receiver) hold(f frame) (msg []byte, commit func(ok bool) error) {
	// The final frame's text stays out of r.text until commit so that a
	// NAK and retransmission does not append it twice.
	msg = append([]byte(nil), r.text...)
	r.text = r.text[:len(r.text)-len(f.text)]
	r.size -= len(f.text)
	r.pending = true
	r.gen++
	gen := r.gen
	return msg, func(ok bool) error {
		if !r.pending || r.gen != gen {
			return errors.New("lis01: commit called twice or after the next Receive; each message is committed once, before the next Receive")
		}
		return r.settle(ok)
	}
}

// settle answers the final frame held for commit.
func (r *Receiver) settle(ok bool) error {
	r.pending = false
	if !ok {
		return r.reply(NAK)
	}
	r.text, r.size, r.oversize = r.text[:0], 0, false
	return r.advance()
}

// advance ACKs the current frame and expects the next number.
func (r *Receiver) advance() error {
	r.accepted++
	r.fn = (r.fn + 1) % 8
	return r.reply(ACK)
}

func (r *Receiver) reply(b byte) error {
	if b == NAK {
		r.opt.Count(health.CounterNAKSent, 1)
	}
	r.lastAt = time.Now()
	return writeAll(r.link, []byte{b})
}

// awaitENQ waits (without a deadline) for the device to open a
// transmission, skipping noise.
func (r *Receiver) awaitENQ(ctx context.Context) error {
	for {
		b, err := r.in.next(ctx, time.Time{})
		if err != nil {
			return err
		}
		if b != ENQ {
			r.opt.Count(health.CounterNoiseBytes, 1)
			continue
		}
		if r.opt.Busy != nil && r.opt.Busy() {
			r.opt.Count(health.CounterBusy, 1)
			if err := r.reply(NAK); err != nil {
				return err
			}
			continue
		}
		return r.establish()
	}
}

func (r *Receiver) establish() error {
	r.inTx, r.fn, r.accepted = true, 1, 0
	r.text, r.size, r.oversize = r.text[:0], 0, false
	return r.reply(ACK)
}

func (r *Receiver) endTx() {
	if r.size > 0 || r.oversize {
		r.opt.Count(health.CounterAborted, 1)
		r.opt.Log.Debug("lis01: transmission ended inside a message; partial message dropped (the device sends it again)")
	}
	r.inTx = false
	r.text, r.size, r.oversize = r.text[:0], 0, false
}

func (r *Receiver) abort(why string) {
	r.opt.Log.Debug("lis01: transmission abandoned", "reason", why)
	if r.size > 0 || r.oversize {
		r.opt.Count(health.CounterAborted, 1)
	}
	r.inTx = false
	r.text, r.size, r.oversize = r.text[:0], 0, false
}

var (
	errBadFrame   = errors.New("bad frame")
	errEOTInFrame = errors.New("EOT inside a frame")
)

// readFrame reads after STX up to LF and parses it. A second STX restarts
// the frame (the first was cut short); EOT ends the transmission; a frame
// past MaxFrameText is read to its LF and reported bad.
func (r *Receiver) readFrame(ctx context.Context, deadline time.Time) (frame, error) {
	limit := r.opt.MaxFrameText + 5
	r.frame = r.frame[:0]
	over := false
	for {
		b, err := r.in.next(ctx, deadline)
		if err != nil {
			return frame{}, err
		}
		switch b {
		case LF:
			if over {
				return frame{}, fmt.Errorf("%w: frame longer than %d text bytes", errBadFrame, r.opt.MaxFrameText)
			}
			f, err := parseFrame(r.frame)
			if err != nil {
				return frame{}, fmt.Errorf("%w: %w", errBadFrame, err)
			}
			return f, nil
		case STX:
			r.opt.Count(health.CounterNoiseBytes, uint64(len(r.frame))+1)
			r.frame, over = r.frame[:0], false
			continue
		case EOT:
			return frame{}, errEOTInFrame
		}
		if len(r.frame) >= limit {
			over = true
			continue
		}
		r.frame = append(r.frame, b)
	}
}
