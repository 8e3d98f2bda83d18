package mllp

import (
	"bytes"
)

// SplitMessages cuts the content of a file into HL7 messages. The file may
// hold MLLP frames (anything outside frames is ignored, and a last frame
// missing its end block is taken as it is) or plain text where each message
// starts with a line beginning "MSH" and lines end in CR, LF or CRLF.
//
// Each returned message has its segments terminated by CR, the way MLLP
// carries them. Blank lines and the batch envelope segments FHS, BHS, BTS
// and FTS are dropped (a batch file sends as its messages). Lines before the
// first MSH are kept as a message of their own rather than dropped silently:
// the receiver will refuse it, and the sender will see that.
func SplitMessages(data []byte) [][]byte {
	if bytes.IndexByte(data, StartBlock) < 0 {
		return splitText(data, nil)
	}
	var out [][]byte
	for {
		i := bytes.IndexByte(data, StartBlock)
		if i < 0 {
			return out
		}
		data = data[i+1:]
		end := bytes.IndexAny(data, string([]byte{StartBlock, EndBlock}))
		if end < 0 {
			return splitText(data, out)
		}
		out = splitText(data[:end], out)
		data = data[end:]
		if data[0] == EndBlock {
			data = data[1:]
		}
	}
}

const utf8BOM = "\xef\xbb\xbf"

// splitText appends the messages found in text to out.
func splitText(text []byte, out [][]byte) [][]byte {
	for bytes.HasPrefix(text, []byte(utf8BOM)) { // editors on Windows add it
		text = text[len(utf8BOM):]
	}
	var cur []byte
	flush := func() {
		if len(cur) > 0 {
			out = append(out, cur)
			cur = nil
		}
	}
	for len(text) > 0 {
		line := text
		next := len(text)
		// A stray end block (framing leftovers in a text file) ends a line
		// too, so that every message returned can be framed.
		if i := bytes.IndexAny(text, "\r\n\x1c"); i >= 0 {
			line = text[:i]
			next = i + 1
			if text[i] == '\r' && i+1 < len(text) && text[i+1] == '\n' {
				next++
			}
		}
		text = text[next:]
		if len(bytes.TrimSpace(line)) == 0 || isBatchEnvelope(line) {
			continue
		}
		if bytes.HasPrefix(line, []byte("MSH")) {
			flush()
		}
		cur = append(cur, line...)
		cur = append(cur, CarriageReturn)
	}
	flush()
	return out
}

func isBatchEnvelope(line []byte) bool {
	if len(line) < 3 || (len(line) > 3 && isAlnum(line[3])) {
		return false
	}
	switch string(line[:3]) {
	case "FHS", "BHS", "BTS", "FTS":
		return true
	}
	return false
}

func isAlnum(b byte) bool {
	return b >= '0' && b <= '9' || b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z'
}
