package hl7

import (
	"fmt"
	"strings"
)

// Delimiters are the separators a message declares in MSH-1 and MSH-2.
type Delimiters struct {
	Field        byte // MSH-1, usually |
	Component    byte // usually ^
	Repetition   byte // usually ~
	Escape       byte // usually \
	Subcomponent byte // usually &
	Truncation   byte // v2.7 fifth encoding character (usually #); 0 when MSH-2 has four
}

// DefaultDelimiters returns |^~\& , the set almost every sender uses.
func DefaultDelimiters() Delimiters {
	return Delimiters{Field: '|', Component: '^', Repetition: '~', Escape: '\\', Subcomponent: '&'}
}

// EncodingCharacters returns MSH-2 as it is written in the header.
func (d Delimiters) EncodingCharacters() string {
	b := []byte{d.Component, d.Repetition, d.Escape, d.Subcomponent}
	if d.Truncation != 0 {
		b = append(b, d.Truncation)
	}
	return string(b)
}

// EscapeText makes s safe to place in a field: each delimiter becomes its HL7
// escape sequence (\F\ \S\ \R\ \E\ \T\, and \P\ for the v2.7 truncation
// character). Control characters, CR and LF included, become spaces because a
// raw CR would end the segment.
func (d Delimiters) EscapeText(s string) string {
	if !d.needsEscape(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		var code byte
		switch {
		case c == d.Escape:
			code = 'E'
		case c == d.Field:
			code = 'F'
		case c == d.Component:
			code = 'S'
		case c == d.Repetition:
			code = 'R'
		case c == d.Subcomponent:
			code = 'T'
		case d.Truncation != 0 && c == d.Truncation:
			code = 'P'
		case c < ' ' || c == 0x7f:
			b.WriteByte(' ')
			continue
		default:
			b.WriteByte(c)
			continue
		}
		b.WriteByte(d.Escape)
		b.WriteByte(code)
		b.WriteByte(d.Escape)
	}
	return b.String()
}

func (d Delimiters) needsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c == 0x7f || c == d.Escape || c == d.Field || c == d.Component ||
			c == d.Repetition || c == d.Subcomponent || (d.Truncation != 0 && c == d.Truncation) {
			return true
		}
	}
	return false
}

// UnescapeText decodes the delimiter escapes (\F\ \S\ \R\ \E\ \T\ \P\) and the
// line break \.br\ for display. Other sequences (\X..\, \H\, character set
// switches) are left as written: they only matter to a full text renderer.
func (d Delimiters) UnescapeText(s string) string {
	if strings.IndexByte(s, d.Escape) < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != d.Escape {
			b.WriteByte(c)
			continue
		}
		end := strings.IndexByte(s[i+1:], d.Escape)
		if end < 0 {
			b.WriteString(s[i:])
			break
		}
		seq := s[i+1 : i+1+end]
		var out string
		switch seq {
		case "F":
			out = string(d.Field)
		case "S":
			out = string(d.Component)
		case "R":
			out = string(d.Repetition)
		case "E":
			out = string(d.Escape)
		case "T":
			out = string(d.Subcomponent)
		case "P":
			if d.Truncation == 0 {
				out = s[i : i+end+2]
			} else {
				out = string(d.Truncation)
			}
		case ".br":
			out = "\n"
		default:
			out = s[i : i+end+2]
		}
		b.WriteString(out)
		i += end + 1
	}
	return b.String()
}

// validDelimiter reports whether c may separate fields or components:
// printable ASCII punctuation, never a letter, digit or space, which would be
// indistinguishable from data.
func validDelimiter(c byte) bool {
	return c > ' ' && c < 0x7f && !isAlnum(c)
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

func isUpperOrDigit(c byte) bool { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') }

// delimitersFrom checks MSH-1 and MSH-2 and returns the set they declare.
func delimitersFrom(fs byte, enc string) (Delimiters, error) {
	if !validDelimiter(fs) {
		const fix = "is a letter, digit, space or control character: it must be punctuation, normally \"|\""
		return Delimiters{}, quotingError(CodeDataTypeError, "MSH-1 field separator "+fix,
			fmt.Sprintf("MSH-1 field separator %q %s", fs, fix))
	}
	switch {
	case len(enc) < 4:
		const fix = "are incomplete: need 4 (component, repetition, escape, subcomponent), normally \"^~\\&\""
		return Delimiters{}, quotingError(CodeRequiredFieldMissing, fmt.Sprintf("MSH-2 encoding characters (%d) %s", len(enc), fix),
			fmt.Sprintf("MSH-2 encoding characters %q %s", enc, fix))
	case len(enc) > 5:
		return Delimiters{}, parseErrorf(CodeDataTypeError,
			"MSH-2 encoding characters are %d characters long: need 4 (component, repetition, escape, subcomponent), or 5 with the v2.7 truncation character; check that MSH-2 is followed by the field separator", len(enc))
	}
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		if !validDelimiter(c) {
			const fix = "is a letter, digit, space or control character: each must be punctuation, normally \"^~\\&\""
			return Delimiters{}, quotingError(CodeDataTypeError, fmt.Sprintf("MSH-2 encoding character %d %s", i+1, fix),
				fmt.Sprintf("MSH-2 encoding character %d (%q) %s", i+1, c, fix))
		}
		if c == fs || strings.IndexByte(enc[:i], c) >= 0 {
			const fix = "(or reuse the field separator): every delimiter must be a different character"
			return Delimiters{}, quotingError(CodeDataTypeError, fmt.Sprintf("MSH-2 encoding character %d repeats an earlier one %s", i+1, fix),
				fmt.Sprintf("MSH-2 encoding characters %q repeat %q %s", enc, c, fix))
		}
	}
	d := Delimiters{Field: fs, Component: enc[0], Repetition: enc[1], Escape: enc[2], Subcomponent: enc[3]}
	if len(enc) == 5 {
		d.Truncation = enc[4]
	}
	return d, nil
}
