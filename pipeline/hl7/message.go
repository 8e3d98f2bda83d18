package hl7

import (
	"fmt"
	"strings"
)

// Message is a parsed HL7 v2 message. It keeps one canonical copy of the text
// (see Normalize) and finds fields on demand, so parsing costs a few
// allocations whatever the message size. A Message is immutable and safe for
// concurrent use.
type Message struct {
	text   string // canonical: every segment ends with CR
	delims Delimiters
	segs   []string // substrings of text, one per segment, without the CR
}

// Parse reads an HL7 v2 message, tolerating LF and CRLF segment ends (see
// Normalize). It refuses the message with a *ParseError when the header or
// the segment structure is unusable or MSH-9, MSH-10 or MSH-12 is empty; the
// package documentation says why exactly these. raw is copied, never kept.
func Parse(raw []byte) (*Message, error) {
	m, err := parseStructure(raw)
	if err != nil {
		return nil, err
	}
	if err := m.checkRequired(); err != nil {
		return nil, err
	}
	return m, nil
}

// parseStructure checks the MSH delimiters and segment IDs but not the
// content of MSH: enough to read an acknowledgement from a lenient peer.
func parseStructure(raw []byte) (*Message, error) {
	text := normalizedString(raw)
	if text == "" {
		return nil, parseErrorf(CodeSegmentSequenceError,
			"message is empty: an HL7 v2 message must start with MSH")
	}
	first := text[:strings.IndexByte(text, '\r')]
	d, err := readMSH(first)
	if err != nil {
		return nil, err
	}
	m := &Message{text: text, delims: d, segs: make([]string, 0, strings.Count(text, "\r"))}
	for rest := text; rest != ""; {
		i := strings.IndexByte(rest, '\r')
		seg := rest[:i]
		rest = rest[i+1:]
		if n := len(m.segs); n > 0 {
			if !isSegmentID(seg, d.Field) {
				return nil, parseErrorf(CodeSegmentSequenceError,
					"segment %d (after %s) does not start with a segment ID (3 capital letters or digits, then the field separator): a line break inside a field splits it into a new segment; the sender must escape line breaks (\\.br\\ or \\X0D\\)",
					n+1, segmentID(m.segs[n-1]))
			}
			if segmentID(seg) == "MSH" {
				return nil, parseErrorf(CodeSegmentSequenceError,
					"segment %d is a second MSH: several messages arrived as one; send each message in its own frame so each gets its own ACK", n+1)
			}
		}
		m.segs = append(m.segs, seg)
	}
	return m, nil
}

// normalizedString is string(Normalize(raw)) with one copy instead of two.
func normalizedString(raw []byte) string {
	if isCanonical(raw) {
		return string(raw)
	}
	var b strings.Builder
	b.Grow(len(raw) + 1)
	eachLine(raw, func(line []byte) {
		b.Write(line)
		b.WriteByte('\r')
	})
	return b.String()
}

func readMSH(seg string) (Delimiters, error) {
	if !strings.HasPrefix(seg, "MSH") {
		switch id := segmentID(seg); {
		case id == "FHS" || id == "BHS":
			return Delimiters{}, parseErrorf(CodeSegmentSequenceError,
				"first segment is %s, not MSH: batch files (FHS/BHS) are not accepted; send each message on its own", id)
		case id != "" && (len(seg) == 3 || !isAlnum(seg[3])):
			// id is three capitals or digits and may be the start of data:
			// only the sender hears it.
			const fix = "not MSH: an HL7 v2 message must start with MSH"
			return Delimiters{}, quotingError(CodeSegmentSequenceError, "first segment is "+fix,
				fmt.Sprintf("first segment is %q, %s", id, fix))
		default:
			return Delimiters{}, parseErrorf(CodeSegmentSequenceError,
				"first segment does not start with MSH: an HL7 v2 message must start with MSH; check that nothing (framing, a file header) precedes it")
		}
	}
	if len(seg) == 3 {
		return Delimiters{}, parseErrorf(CodeRequiredFieldMissing,
			"MSH segment ends after \"MSH\": it needs the field separator and 4 encoding characters, normally MSH|^~\\&|")
	}
	fs := seg[3]
	enc := seg[4:]
	if i := strings.IndexByte(enc, fs); i >= 0 {
		enc = enc[:i]
	}
	return delimitersFrom(fs, enc)
}

func (m *Message) checkRequired() error {
	msh := m.segs[0]
	switch {
	case m.field(msh, mshType, 0, 0) == "":
		return parseErrorf(CodeRequiredFieldMissing,
			"MSH-9 message type is empty: the sender must fill MSH-9 (for example ADT^A01)")
	case m.field(msh, mshType, 1, 0) == "":
		return parseErrorf(CodeRequiredFieldMissing,
			"MSH-9.1 message code is empty: the sender must fill MSH-9 as code^event (for example ADT^A01)")
	}
	switch ctl := m.field(msh, mshControlID, 0, 0); {
	case ctl == "":
		return parseErrorf(CodeRequiredFieldMissing,
			"MSH-10 control ID is empty: the sender must give every message a unique MSH-10 so its ACK can name it")
	case len(ctl) > maxControlID:
		return parseErrorf(CodeDataTypeError,
			"MSH-10 control ID is %d bytes long: HL7 allows at most %d (20 before v2.7)", len(ctl), maxControlID)
	case strings.IndexFunc(ctl, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0:
		return parseErrorf(CodeDataTypeError,
			"MSH-10 control ID contains control characters: it must be printable text (it is echoed in MSA-2 and written to logs)")
	}
	v := m.field(msh, mshVersion, 1, 0)
	switch {
	case v == "":
		return parseErrorf(CodeRequiredFieldMissing,
			"MSH-12 version is empty: the sender must fill MSH-12 (for example 2.5.1)")
	case !isV2(v):
		if len(v) > 12 {
			return parseErrorf(CodeUnsupportedVersion,
				"MSH-12 version is not an HL7 v2 version: this gateway takes v2.x messages (MSH-12 such as 2.3 or 2.5.1)")
		}
		const fix = "is not an HL7 v2 version: this gateway takes v2.x messages (MSH-12 such as 2.3 or 2.5.1)"
		return quotingError(CodeUnsupportedVersion, "MSH-12 version "+fix, fmt.Sprintf("MSH-12 version %q %s", v, fix))
	}
	return nil
}

// maxControlID is the v2.7 length of MSH-10. The control ID is the one thing
// logs name, so it must be short and printable.
const maxControlID = 199

func isV2(v string) bool { return v == "2" || strings.HasPrefix(v, "2.") }

// isSegmentID reports whether seg starts with a segment ID: a capital letter,
// two capital letters or digits, then the field separator or the segment end.
func isSegmentID(seg string, fs byte) bool {
	if len(seg) < 3 || seg[0] < 'A' || seg[0] > 'Z' || !isUpperOrDigit(seg[1]) || !isUpperOrDigit(seg[2]) {
		return false
	}
	return len(seg) == 3 || seg[3] == fs
}

// segmentID returns the first three characters of seg when they are a
// segment ID, else "": safe to put in an error because it cannot be data.
func segmentID(seg string) string {
	if len(seg) < 3 || seg[0] < 'A' || seg[0] > 'Z' || !isUpperOrDigit(seg[1]) || !isUpperOrDigit(seg[2]) {
		return ""
	}
	return seg[:3]
}

// MSH field numbers used by the header and the ACK.
const (
	mshSendingApp        = 3
	mshSendingFacility   = 4
	mshReceivingApp      = 5
	mshReceivingFacility = 6
	mshTimestamp         = 7
	mshType              = 9
	mshControlID         = 10
	mshProcessingID      = 11
	mshVersion           = 12
	mshAcceptAck         = 15
	mshAppAck            = 16
	mshCharset           = 18
)

// Raw returns a copy of the message in canonical form (see Normalize).
func (m *Message) Raw() []byte { return []byte(m.text) }

// Delimiters returns the separators declared in MSH-1 and MSH-2.
func (m *Message) Delimiters() Delimiters { return m.delims }

// Segments returns the number of segments, MSH included.
func (m *Message) Segments() int { return len(m.segs) }

// Get returns the value at path (see ParsePath) in the first occurrence of
// the segment, first repetition, raw (escapes not decoded). ok is false when
// the path is invalid, the segment is absent or the value is empty.
func (m *Message) Get(path string) (value string, ok bool) {
	p, err := ParsePath(path)
	if err != nil {
		return "", false
	}
	return m.GetPath(p)
}

// GetPath is Get with a path parsed once in advance.
func (m *Message) GetPath(p Path) (value string, ok bool) {
	if m == nil {
		return "", false
	}
	for _, seg := range m.segs {
		if m.is(seg, p.Segment) {
			v := m.field(seg, p.Field, p.Component, p.Subcomponent)
			return v, v != ""
		}
	}
	return "", false
}

// Values returns the value at path in every occurrence of the segment, in
// message order ("" where an occurrence lacks it); nil when the segment is
// absent or the path invalid. Values("OBX-5") lists every result.
func (m *Message) Values(path string) []string {
	p, err := ParsePath(path)
	if err != nil {
		return nil
	}
	return m.ValuesPath(p)
}

// ValuesPath is Values with a path parsed once in advance.
func (m *Message) ValuesPath(p Path) []string {
	if m == nil {
		return nil
	}
	var out []string
	for _, seg := range m.segs {
		if m.is(seg, p.Segment) {
			out = append(out, m.field(seg, p.Field, p.Component, p.Subcomponent))
		}
	}
	return out
}

func (m *Message) is(seg, id string) bool {
	return len(id) == 3 && strings.HasPrefix(seg, id)
}

// field finds field f (component c, subcomponent s; 0 = all of it) in the
// first repetition. MSH counts its field separator as MSH-1 and the encoding
// characters as MSH-2, which are returned whole and never split.
func (m *Message) field(seg string, f, c, s int) string {
	d := m.delims
	var v string
	switch {
	case f <= 0:
		return ""
	case !strings.HasPrefix(seg, "MSH"):
		v = nth(seg, d.Field, f)
	case f == 1 || f == 2:
		if c > 1 || s > 1 {
			return ""
		}
		if f == 1 {
			return seg[3:4]
		}
		return nth(seg, d.Field, 1)
	default:
		v = nth(seg, d.Field, f-1)
	}
	if i := strings.IndexByte(v, d.Repetition); i >= 0 {
		v = v[:i]
	}
	if c <= 0 {
		return v
	}
	v = nth(v, d.Component, c-1)
	if s <= 0 {
		return v
	}
	return nth(v, d.Subcomponent, s-1)
}

// nth returns the n-th (0-based) piece of s split on sep, or "".
func nth(s string, sep byte, n int) string {
	for ; n > 0; n-- {
		i := strings.IndexByte(s, sep)
		if i < 0 {
			return ""
		}
		s = s[i+1:]
	}
	if i := strings.IndexByte(s, sep); i >= 0 {
		return s[:i]
	}
	return s
}

// Header is the part of MSH that intake, routing and logs use. Values are
// raw, first repetition; a field the sender left empty is "".
type Header struct {
	SendingApp        string // MSH-3.1
	SendingFacility   string // MSH-4.1
	ReceivingApp      string // MSH-5.1
	ReceivingFacility string // MSH-6.1
	Timestamp         string // MSH-7.1
	MessageType       string // MSH-9.1, e.g. ADT
	TriggerEvent      string // MSH-9.2, e.g. A01
	ControlID         string // MSH-10 as sent (the only thing logs may name)
	ProcessingID      string // MSH-11.1: P production, T training, D debugging
	Version           string // MSH-12.1, e.g. 2.5.1
	AcceptAckType     string // MSH-15: AL, NE, ER, SU; "" in original mode
	AppAckType        string // MSH-16
	Charset           string // MSH-18.1, e.g. UNICODE UTF-8; "" means ASCII
}

// Enhanced reports whether the sender asked for enhanced acknowledgement
// (MSH-15 or MSH-16 filled): the ACK then carries CA/CE/CR, not AA/AE/AR.
func (h Header) Enhanced() bool { return h.AcceptAckType != "" || h.AppAckType != "" }

// Header reads the MSH fields of the message.
func (m *Message) Header() Header {
	msh := m.segs[0]
	f := func(n, c int) string { return m.field(msh, n, c, 0) }
	return Header{
		SendingApp:        f(mshSendingApp, 1),
		SendingFacility:   f(mshSendingFacility, 1),
		ReceivingApp:      f(mshReceivingApp, 1),
		ReceivingFacility: f(mshReceivingFacility, 1),
		Timestamp:         f(mshTimestamp, 1),
		MessageType:       f(mshType, 1),
		TriggerEvent:      f(mshType, 2),
		ControlID:         f(mshControlID, 0),
		ProcessingID:      f(mshProcessingID, 1),
		Version:           f(mshVersion, 1),
		AcceptAckType:     f(mshAcceptAck, 0),
		AppAckType:        f(mshAppAck, 0),
		Charset:           f(mshCharset, 1),
	}
}
