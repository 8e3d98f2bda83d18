package lis01

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/health"
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
		deadline := r.lastAt.Add(r.opt.FrameTimeout)
		b, err := r.in.next(ctx, deadline)
		if errors.Is(err, ErrTimeout) {
			r.opt.Count(health.CounterTimeouts, 1)
			r.abort("no frame within the frame timeout")
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		switch b {
		case EOT:
			r.endTx()
			continue
		case ENQ:
			// The device gave up on this transmission without EOT (or our
			// EOT was lost) and starts again: follow it.
			r.abort("ENQ inside a transmission")
			if err := r.establish(); err != nil {
				return nil, nil, err
			}
			continue
		case STX:
		default:
			r.opt.Count(health.CounterNoiseBytes, 1)
			continue
		}
		f, err := r.readFrame(ctx, deadline)
		switch {
		case errors.Is(err, errEOTInFrame):
			r.endTx()
			continue
		case errors.Is(err, ErrTimeout):
			r.opt.Count(health.CounterTimeouts, 1)
			r.abort("frame not finished within the frame timeout")
			continue
		case errors.Is(err, errBadFrame):
			r.opt.Log.Debug("lis01: NAK bad frame", "reason", err.Error())
			if err := r.reply(NAK); err != nil {
				return nil, nil, err
			}
			continue
		case err != nil:
			return nil, nil, err
		}
		if f.fn != r.fn {
			if r.accepted > 0 && f.fn == (r.fn+7)%8 {
				// Our ACK was lost and the device sent the frame again.
				r.opt.Count(health.CounterDuplicates, 1)
				if err := r.reply(ACK); err != nil {
					return nil, nil, err
				}
				continue
			}
			r.opt.Log.Debug("lis01: NAK frame number", "got", f.fn, "want", r.fn)
			if err := r.reply(NAK); err != nil {
				return nil, nil, err
			}
			continue
		}
		r.opt.Count(health.CounterFrames, 1)
		r.size += len(f.text)
		if r.size > r.opt.MaxMessageBytes {
			if !r.oversize {
				r.oversize, r.text = true, nil
			}
		} else {
			r.text = append(r.text, f.text...)
		}
		if !f.final {
			if err := r.advance(); err != nil {
				return nil, nil, err
			}
			continue
		}
		if r.oversize {
			size := r.size
			r.size -= len(f.text) // a retransmission of this frame counts again
			r.opt.Count(health.CounterOversize, 1)
			if err := r.reply(NAK); err != nil {
				return nil, nil, err
			}
			return nil, nil, fmt.Errorf("%w: a message of at least %d bytes arrived but the limit (max_message_bytes) is %d; its last frame was NAKed, so the device keeps it: raise the limit or have the device send smaller messages",
				ErrTooLarge, size, r.opt.MaxMessageBytes)
		}
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
		}, nil
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
