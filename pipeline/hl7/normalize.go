package hl7

import (
	"bytes"
	"strings"
)

// Junk trimmed from the ends of a message: line ends and blank lines, NULs
// and Ctrl-Z that serial lines and files leave behind, and stray MLLP block
// characters (VT, FS) from a sloppy framer. Spaces and tabs go only where
// they cannot be data: before MSH and on blank lines; a space ending the last
// field stays, because the ACK echoes values and must echo them unchanged.
const (
	leadJunk  = "\x00\t\n\v\f\r\x1a\x1c "
	trailJunk = "\x00\n\v\f\r\x1a\x1c"
)

// Normalize returns raw in canonical form: every segment terminated by one CR,
// LF and CRLF line ends turned into CR, blank lines dropped and junk trimmed
// from both ends (see leadJunk). Segment content is never changed. It returns raw itself when it is already
// canonical and a new slice otherwise; raw is never modified. An input with
// no segments gives an empty result.
func Normalize(raw []byte) []byte {
	if isCanonical(raw) {
		return raw
	}
	out := make([]byte, 0, len(raw)+1)
	eachLine(raw, func(line []byte) {
		out = append(out, line...)
		out = append(out, '\r')
	})
	return out
}

// eachLine calls emit for every non-blank line of raw once junk is trimmed
// from its ends, splitting on CR or LF.
func eachLine(raw []byte, emit func(line []byte)) {
	body := trimTail(bytes.TrimLeft(raw, leadJunk))
	for len(body) > 0 {
		var line []byte
		if i := bytes.IndexAny(body, "\r\n"); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			line, body = body, nil
		}
		if !isBlank(line) {
			emit(line)
		}
	}
}

// trimTail removes trailing junk and blank lines, in any interleaving, from
// b, which must start with a non-blank byte (or be empty).
func trimTail(b []byte) []byte {
	for {
		b = bytes.TrimRight(b, trailJunk)
		i := bytes.LastIndexAny(b, "\r\n")
		if len(b) == 0 || len(bytes.TrimLeft(b[i+1:], leadJunk)) > 0 {
			return b
		}
		b = b[:i]
	}
}

func isBlank(line []byte) bool {
	for _, c := range line {
		if c != ' ' && c != '\t' {
			return false
		}
	}
	return true
}

func isCanonical(raw []byte) bool {
	n := len(raw)
	if n == 0 {
		return true
	}
	if n < 2 || raw[n-1] != '\r' || strings.IndexByte(leadJunk, raw[0]) >= 0 ||
		strings.IndexByte(trailJunk, raw[n-2]) >= 0 || bytes.IndexByte(raw, '\n') >= 0 {
		return false
	}
	for rest := raw; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\r')
		if isBlank(rest[:i]) {
			return false
		}
		rest = rest[i+1:]
	}
	return true
}
