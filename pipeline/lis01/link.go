package lis01

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"
)

// Link is the byte line the protocol runs on: a serial port, a TCP
// connection or a pipe. net.Conn satisfies it. Read must honour the read
// deadline (returning an error for which errors.Is(err,
// os.ErrDeadlineExceeded) or a net.Error with Timeout() true), and io.EOF
// must mean the line has really ended: a serial port that returns io.EOF on
// a read timeout needs an adapter (see pipeline/serialport).
type Link interface {
	io.Reader
	io.Writer
	SetReadDeadline(t time.Time) error
}

// Errors a caller may want to tell apart (test with errors.Is).
var (
	// ErrTimeout: the peer did not answer or send in time.
	ErrTimeout = errors.New("lis01: timed out")
	// ErrBusy: the receiver answered every ENQ with NAK.
	ErrBusy = errors.New("lis01: receiver busy")
	// ErrContention: the peer sent ENQ while we were establishing; it has
	// priority and we yield.
	ErrContention = errors.New("lis01: line contention")
	// ErrRefused: the receiver NAKed the same frame on every try.
	ErrRefused = errors.New("lis01: frame refused")
	// ErrTooLarge: a received message went past MaxMessageBytes.
	ErrTooLarge = errors.New("lis01: message too large")
	// ErrLinkClosed: the link reported end of stream.
	ErrLinkClosed = errors.New("lis01: link closed")
)

// Defaults of Options, from the standard where it sets them.
const (
	DefaultReplyTimeout    = 15 * time.Second // a sender waits this long for ACK/NAK
	DefaultFrameTimeout    = 30 * time.Second // a receiver waits this long for the next frame or EOT
	DefaultBusyDelay       = 10 * time.Second // a sender waits this long after a NAK to its ENQ
	DefaultPoll            = 200 * time.Millisecond
	DefaultMaxTries        = 6
	DefaultMaxFrameText    = 4096
	DefaultMaxMessageBytes = 1 << 20
)

// Options tune a Receiver or Sender. Zero values take the defaults above.
type Options struct {
	ReplyTimeout time.Duration
	FrameTimeout time.Duration
	BusyDelay    time.Duration
	// Poll bounds how long one read blocks, so that a cancelled context is
	// noticed promptly even on a silent line.
	Poll time.Duration
	// MaxTries is how often a sender transmits one frame (or ENQ after NAK)
	// before giving up.
	MaxTries int
	// MaxFrameText is the longest frame text a receiver accepts (the
	// standard's 240 plus room for lenient devices); longer frames are NAKed.
	MaxFrameText int
	// MaxMessageBytes bounds an assembled message; past it the receiver
	// keeps the line in step but NAKs the final frame and returns ErrTooLarge.
	MaxMessageBytes int
	// Busy, when set, is asked on every ENQ; true answers NAK.
	Busy func() bool
	// Count, when set, is told about events by counter name (the health
	// package's Counter* names: noise_bytes, nak_sent, frames, duplicates,
	// timeouts, aborted, busy, contention, oversize, retransmits).
	Count func(counter string, n uint64)
	// Log, when set, gets protocol events at debug level (never text).
	Log *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.ReplyTimeout <= 0 {
		o.ReplyTimeout = DefaultReplyTimeout
	}
	if o.FrameTimeout <= 0 {
		o.FrameTimeout = DefaultFrameTimeout
	}
	if o.BusyDelay <= 0 {
		o.BusyDelay = DefaultBusyDelay
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.MaxTries <= 0 {
		o.MaxTries = DefaultMaxTries
	}
	if o.MaxFrameText <= 0 {
		o.MaxFrameText = DefaultMaxFrameText
	}
	if o.MaxFrameText < MaxText {
		o.MaxFrameText = MaxText
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.Count == nil {
		o.Count = func(string, uint64) {}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// reader buffers a Link and reads one byte at a time against a deadline
// while watching a context.
type reader struct {
	link Link
	poll time.Duration
	buf  []byte
	r, w int
}

func newReader(l Link, poll time.Duration) *reader {
	return &reader{link: l, poll: poll, buf: make([]byte, 4096)}
}

// next returns the next byte. A zero deadline waits until ctx ends. It
// returns ErrTimeout when the deadline passes, ctx.Err() when the context
// ends and a wrapped error when the link fails.
func (rd *reader) next(ctx context.Context, deadline time.Time) (byte, error) {
	for rd.r == rd.w {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		now := time.Now()
		if !deadline.IsZero() && !now.Before(deadline) {
			return 0, ErrTimeout
		}
		step := now.Add(rd.poll)
		if !deadline.IsZero() && deadline.Before(step) {
			step = deadline
		}
		if err := rd.link.SetReadDeadline(step); err != nil {
			return 0, fmt.Errorf("lis01: setting the read deadline on the link: %w", err)
		}
		n, err := rd.link.Read(rd.buf)
		rd.r, rd.w = 0, n
		if n > 0 {
			break
		}
		switch {
		case err == nil, isTimeout(err):
		case errors.Is(err, io.EOF):
			return 0, ErrLinkClosed
		default:
			return 0, fmt.Errorf("lis01: reading the link: %w", err)
		}
	}
	b := rd.buf[rd.r]
	rd.r++
	return b, nil
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func writeAll(l Link, b []byte) error {
	if _, err := l.Write(b); err != nil {
		return fmt.Errorf("lis01: writing to the link: %w", err)
	}
	return nil
}
