package lis01

import (
	"bytes"
	"fmt"
)

// Control characters of the protocol.
const (
	STX byte = 0x02
	ETX byte = 0x03
	EOT byte = 0x04
	ENQ byte = 0x05
	ACK byte = 0x06
	LF  byte = 0x0A
	CR  byte = 0x0D
	NAK byte = 0x15
	ETB byte = 0x17
)

// MaxText is the most text the standard allows in one frame; senders split
// longer messages into ETB frames of this size.
const MaxText = 240

// FrameOverhead is the number of bytes a frame adds to its text:
// STX FN ETB|ETX C1 C2 CR LF.
const FrameOverhead = 7

// Checksum is the modulo-256 sum of b (FN through ETB/ETX inclusive).
func Checksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

const hexDigits = "0123456789ABCDEF"

// AppendFrame appends one frame carrying text to dst. fn is the frame number
// 0..7; final selects ETX (last frame of a message) over ETB.
func AppendFrame(dst []byte, fn int, text []byte, final bool) []byte {
	start := len(dst)
	dst = append(dst, STX, '0'+byte(fn&7))
	dst = append(dst, text...)
	if final {
		dst = append(dst, ETX)
	} else {
		dst = append(dst, ETB)
	}
	sum := Checksum(dst[start+1:])
	return append(dst, hexDigits[sum>>4], hexDigits[sum&0xF], CR, LF)
}

// frame is one parsed frame.
type frame struct {
	fn    int
	text  []byte
	final bool
}

// parseFrame checks the bytes between STX and LF (exclusive): FN text
// ETB|ETX C1 C2 CR. The returned text aliases b. The error says what is
// wrong without quoting the text, which is patient data.
func parseFrame(b []byte) (frame, error) {
	if len(b) < 5 {
		return frame{}, fmt.Errorf("frame of %d bytes is shorter than the 5 of FN, ETB/ETX, checksum and CR", len(b))
	}
	n := len(b)
	if b[n-1] != CR {
		return frame{}, fmt.Errorf("frame does not end with CR LF")
	}
	term := b[n-4]
	if term != ETX && term != ETB {
		return frame{}, fmt.Errorf("frame has 0x%02X where ETB or ETX belongs", term)
	}
	hi, ok1 := unhex(b[n-3])
	lo, ok2 := unhex(b[n-2])
	if !ok1 || !ok2 {
		return frame{}, fmt.Errorf("frame checksum is not two hex digits")
	}
	if got, want := hi<<4|lo, Checksum(b[:n-3]); got != want {
		return frame{}, fmt.Errorf("frame checksum is %02X but the frame sums to %02X", got, want)
	}
	if b[0] < '0' || b[0] > '7' {
		return frame{}, fmt.Errorf("frame number 0x%02X is not a digit 0..7", b[0])
	}
	return frame{fn: int(b[0] - '0'), text: b[1 : n-4], final: term == ETX}, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// restricted reports the characters that E1381 forbids in message text:
// they would be read as protocol control characters.
func restricted(c byte) bool {
	switch c {
	case 0x01, STX, ETX, EOT, ENQ, ACK, 0x10, NAK, 0x16, ETB, LF, 0x11, 0x12, 0x13, 0x14:
		return true
	}
	return false
}

// CheckText returns an error naming the first character of msg that cannot
// travel in LIS01 text (LF, STX, ETX...). HL7 separates segments with CR only,
// so a message with LF must be normalised before it is sent.
func CheckText(msg []byte) error {
	for i, c := range msg {
		if restricted(c) {
			return fmt.Errorf("lis01: message byte %d is control character 0x%02X, which LIS01-A2 reserves for framing; send segments separated by CR only and without control characters", i, c)
		}
	}
	return nil
}

// SplitMessages splits the text of one LIS01 message into HL7 messages,
// starting a new one at every segment (after CR or LF) that begins with
// "MSH". Text before the first MSH stays with the first message, so that
// intake sees it and can refuse it rather than it vanishing. The results
// alias text. Empty text gives no messages.
func SplitMessages(text []byte) [][]byte {
	var out [][]byte
	start := 0
	seen := bytes.HasPrefix(text, []byte("MSH"))
	for i := 1; i < len(text); i++ {
		if (text[i-1] == CR || text[i-1] == LF) && bytes.HasPrefix(text[i:], []byte("MSH")) {
			if seen {
				out = append(out, text[start:i])
				start = i
			}
			seen = true
		}
	}
	if start < len(text) {
		out = append(out, text[start:])
	}
	return out
}
