// Package mllp speaks the Minimal Lower Layer Protocol (HL7 v2 over TCP):
// the frame codec, a listener that hands each frame to a Handler and writes
// its acknowledgement back, a client, and the MLLP delivery destination.
//
// A frame is StartBlock, the message, EndBlock, CarriageReturn. The reader is
// lenient where real devices are sloppy and strict where memory is at stake:
//
//   - bytes before a StartBlock are skipped and counted (Skipped);
//   - the CarriageReturn after EndBlock is optional: a frame ends at EndBlock,
//     and one CR directly after it is swallowed by the next read;
//   - a StartBlock inside a frame abandons the open frame and starts a new
//     one (the sender evidently gave up on the first and began again; the
//     abandoned bytes count as skipped). StartBlock never occurs in HL7 text,
//     so this cannot cut a well-formed message;
//   - a frame longer than the limit keeps only its first maxBytes bytes
//     (enough to read MSH and answer AR) and discards the rest as it
//     streams, so a 100 MiB frame costs maxBytes of memory, not 100 MiB.
package mllp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Framing bytes.
const (
	StartBlock     = 0x0b // VT: opens a frame
	EndBlock       = 0x1c // FS: closes a frame
	CarriageReturn = 0x0d // CR: follows EndBlock (optional on read)
)

// DefaultMaxMessageBytes is the frame size limit used when none is given.
const DefaultMaxMessageBytes = 1 << 20

// readBufferSize is the per-connection read buffer. It bounds how much is
// copied per system call, not the frame size.
const readBufferSize = 16 << 10

// Frame is one MLLP frame's content, without the framing bytes.
type Frame struct {
	// Data holds the content, or its first maxBytes bytes when Oversize.
	// It is freshly allocated per frame and belongs to the caller.
	Data []byte
	// Oversize says the frame was longer than maxBytes; Data is truncated.
	Oversize bool
	// Size is the full content length as received.
	Size int64
}

// Reader reads MLLP frames from a byte stream.
type Reader struct {
	br       *bufio.Reader
	max      int
	skipped  int64
	afterEnd bool // the last byte consumed was an EndBlock: one CR may follow
}

// NewReader reads frames from r keeping at most maxBytes of each frame's
// content; maxBytes <= 0 means DefaultMaxMessageBytes (there is no
// unlimited mode: memory must stay bounded whatever a peer sends).
func NewReader(r io.Reader, maxBytes int) *Reader {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxMessageBytes
	}
	return &Reader{br: bufio.NewReaderSize(r, readBufferSize), max: maxBytes}
}

// Skipped is the number of bytes read so far that belonged to no returned
// frame: noise before a StartBlock and frames abandoned by a new StartBlock.
// Framing bytes of returned frames and the CR after an EndBlock are not
// counted.
func (r *Reader) Skipped() int64 { return r.skipped }

// ReadFrame returns the next complete frame. It returns io.EOF when the
// stream ends outside a frame, and an error matching io.ErrUnexpectedEOF
// (use errors.Is) when it ends inside one. Other errors from the underlying
// reader (deadlines included) are wrapped; the bytes of a frame interrupted
// that way are lost and a later call resynchronises at the next StartBlock.
func (r *Reader) ReadFrame() (Frame, error) {
	if err := r.hunt(); err != nil {
		return Frame{}, err
	}
	var (
		data []byte
		size int64
	)
	for {
		chunk, err := r.br.ReadSlice(EndBlock)
		body, ended := chunk, false
		if err == nil {
			body, ended = chunk[:len(chunk)-1], true
		}
		if i := bytes.LastIndexByte(body, StartBlock); i >= 0 {
			// Abandon the open frame: its StartBlock, what it held so
			// far, and everything in this chunk up to the new StartBlock.
			r.skipped += 1 + size + int64(i)
			data, size = data[:0], 0
			body = body[i+1:]
		}
		data = appendCapped(data, body, r.max)
		size += int64(len(body))
		if ended {
			r.afterEnd = true
			if data == nil {
				data = []byte{}
			}
			return Frame{Data: data, Oversize: size > int64(r.max), Size: size}, nil
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return Frame{}, fmt.Errorf("mllp: stream ended %d bytes into a frame, before its end block 0x1c: %w", size, io.ErrUnexpectedEOF)
		default:
			return Frame{}, fmt.Errorf("mllp: reading a frame (%d bytes in): %w", size, err)
		}
	}
}

// hunt consumes bytes up to and including the next StartBlock.
func (r *Reader) hunt() error {
	for {
		chunk, err := r.br.ReadSlice(StartBlock)
		junk := chunk
		if err == nil {
			junk = chunk[:len(chunk)-1]
		}
		if len(chunk) > 0 {
			if r.afterEnd && len(junk) > 0 && junk[0] == CarriageReturn {
				junk = junk[1:]
			}
			r.afterEnd = false
		}
		r.skipped += int64(len(junk))
		switch {
		case err == nil:
			return nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return io.EOF
		default:
			return fmt.Errorf("mllp: waiting for a frame: %w", err)
		}
	}
}

// appendCapped appends src to dst but never lets dst hold, or reserve
// capacity for, more than limit bytes.
func appendCapped(dst, src []byte, limit int) []byte {
	room := limit - len(dst)
	if room <= 0 || len(src) == 0 {
		return dst
	}
	if len(src) > room {
		src = src[:room]
	}
	need := len(dst) + len(src)
	if need > cap(dst) {
		newCap := max(2*cap(dst), need, 512)
		newCap = min(newCap, limit)
		grown := make([]byte, len(dst), newCap)
		copy(grown, dst)
		dst = grown
	}
	return append(dst, src...)
}

// ErrFramingByte is returned by WriteFrame for content that holds a
// StartBlock or EndBlock byte: such content cannot be framed unambiguously.
var ErrFramingByte = errors.New("mllp: content holds a framing byte (0x0b or 0x1c)")

// WriteFrame writes data as one frame (StartBlock, data, EndBlock, CR) in a
// single Write call, so that concurrent writers on one stream could never
// interleave partial frames and small frames leave in one packet.
func WriteFrame(w io.Writer, data []byte) error {
	if i := bytes.IndexByte(data, StartBlock); i >= 0 {
		return fmt.Errorf("%w at offset %d; HL7 text never holds it, so the message is corrupt: fix the producer", ErrFramingByte, i)
	}
	if i := bytes.IndexByte(data, EndBlock); i >= 0 {
		return fmt.Errorf("%w at offset %d; HL7 text never holds it, so the message is corrupt: fix the producer", ErrFramingByte, i)
	}
	buf := make([]byte, 0, len(data)+3)
	buf = append(buf, StartBlock)
	buf = append(buf, data...)
	buf = append(buf, EndBlock, CarriageReturn)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("mllp: writing a %d-byte frame: %w", len(data), err)
	}
	return nil
}
