package hl7

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

// maxReason bounds the reason text in MSA-3 and ERR-8 (ERR-8 is 250 long in
// v2.5); our reasons are one sentence, so this only guards against misuse.
const maxReason = 250

// maxEchoed bounds an MSH field that ACKUnparsed copies from a message it
// could not parse: past this the field is more likely garbage than a name.
const maxEchoed = 227

// defaultVersion is what ACKUnparsed claims when the sender's MSH-12 is
// unreadable: v2.5 is the most widely understood ERR layout.
const defaultVersion = "2.5"

// ackHeader is what an ACK copies from the message it answers, every value
// raw in d's encoding.
type ackHeader struct {
	d                                  Delimiters
	sendApp, sendFac, recvApp, recvFac string
	trigger                            string
	controlID                          string // MSH-10 of the message, echoed in MSA-2
	processing                         string
	version                            string // whole MSH-12; MSH-12.1 starts with "2"
	charset                            string
	enhanced                           bool
}

// ACK builds the acknowledgement of m.
//
// code is intake's verdict; it becomes MSA-1 AA/AE/AR, or CA/CE/CR when the
// sender asked for enhanced mode (MSH-15 or MSH-16 filled). An unknown code
// is answered as AE, which makes the sender retry: never lose a message over
// a programming error. For AE and AR the reason goes, escaped, into MSA-3
// and an ERR segment with errCode from HL7 table 0357 (Code... constants; 0
// means CodeInternalError); both are ignored for AA.
//
// The MSH swaps sender and receiver (MSH-3/4 with MSH-5/6), keeps the
// message's delimiters, processing ID (MSH-11), version (MSH-12) and charset
// (MSH-18), sets MSH-7 to now (YYYYMMDDHHMMSS) and MSH-10 to controlID,
// which the caller makes unique (when empty, now with nanoseconds stands in).
// MSH-9 is ACK^<trigger>^ACK, or ACK^<trigger> before v2.3.1, which had no
// message structure component. ERR follows the version: ERR-3 code, ERR-4
// severity and ERR-8 text from v2.5, ERR-1 before.
func ACK(m *Message, code flow.Code, errCode int, reason, controlID string, now time.Time) []byte {
	msh := m.segs[0]
	f := func(n, c int) string { return m.field(msh, n, c, 0) }
	h := ackHeader{
		d:          m.delims,
		sendApp:    f(mshSendingApp, 0),
		sendFac:    f(mshSendingFacility, 0),
		recvApp:    f(mshReceivingApp, 0),
		recvFac:    f(mshReceivingFacility, 0),
		trigger:    f(mshType, 2),
		controlID:  f(mshControlID, 0),
		processing: f(mshProcessingID, 0),
		version:    f(mshVersion, 0),
		charset:    f(mshCharset, 0),
		enhanced:   f(mshAcceptAck, 0) != "" || f(mshAppAck, 0) != "",
	}
	if !isV2(f(mshVersion, 1)) {
		h.version = defaultVersion
	}
	return buildACK(h, code, errCode, reason, controlID, now)
}

// ACKUnparsed builds the best acknowledgement it can for a message Parse
// refused, usually with code flow.Rejected and the *ParseError's Code and
// text. It recovers what the first line still offers: the delimiters, the
// sender and receiver, MSH-10 (so that MSA-2 tells the sender which message
// failed), MSH-11, MSH-12 and the acknowledgement mode. What cannot be
// recovered falls back to |^~\& and version 2.5; MSA-2 stays empty when no
// control ID is readable. The result always parses.
func ACKUnparsed(raw []byte, code flow.Code, errCode int, reason, controlID string, now time.Time) []byte {
	return buildACK(recoverHeader(raw), code, errCode, reason, controlID, now)
}

func recoverHeader(raw []byte) ackHeader {
	h := ackHeader{d: DefaultDelimiters(), version: defaultVersion}
	line := bytes.TrimLeft(raw, leadJunk)
	if i := bytes.IndexAny(line, "\r\n"); i >= 0 {
		line = line[:i]
	}
	if len(line) < 4 || !bytes.HasPrefix(line, []byte("MSH")) || !validDelimiter(line[3]) {
		return h
	}
	fs := line[3]
	// fieldAt returns MSH-n of the line, or "" when it is too long or holds
	// control characters to be a header value worth echoing.
	fieldAt := func(n int) string {
		v := line[4:]
		for ; n > 2; n-- {
			i := bytes.IndexByte(v, fs)
			if i < 0 {
				return ""
			}
			v = v[i+1:]
		}
		if i := bytes.IndexByte(v, fs); i >= 0 {
			v = v[:i]
		}
		if len(v) > maxEchoed || bytes.IndexFunc(v, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0 {
			return ""
		}
		return string(v)
	}
	d, err := delimitersFrom(fs, fieldAt(2))
	clean := func(n int) string {
		v := fieldAt(n)
		if err != nil {
			// The sender's component characters are unknown: pass the
			// value through as text under our own delimiters.
			return h.d.EscapeText(v)
		}
		if i := strings.IndexByte(v, d.Repetition); i >= 0 {
			v = v[:i]
		}
		return v
	}
	if err == nil {
		h.d = d
	}
	h.sendApp, h.sendFac = clean(mshSendingApp), clean(mshSendingFacility)
	h.recvApp, h.recvFac = clean(mshReceivingApp), clean(mshReceivingFacility)
	h.controlID = clean(mshControlID)
	h.processing = clean(mshProcessingID)
	h.charset = clean(mshCharset)
	h.enhanced = clean(mshAcceptAck) != "" || clean(mshAppAck) != ""
	if v := clean(mshVersion); isV2(nth(v, h.d.Component, 0)) {
		h.version = v
	}
	if err == nil {
		h.trigger = nth(clean(mshType), d.Component, 1)
	}
	return h
}

func buildACK(h ackHeader, code flow.Code, errCode int, reason, controlID string, now time.Time) []byte {
	d := h.d
	if controlID == "" {
		controlID = now.Format("20060102150405.000000000")
	}
	controlID = d.EscapeText(controlID)
	accepted := code == flow.Accepted
	msa1 := "E"
	switch code {
	case flow.Accepted:
		msa1 = "A"
	case flow.Rejected:
		msa1 = "R"
	}
	if h.enhanced {
		msa1 = "C" + msa1
	} else {
		msa1 = "A" + msa1
	}
	if errCode == 0 {
		errCode = CodeInternalError
	}
	reason = d.EscapeText(truncate(reason, maxReason))
	errText := d.EscapeText(ErrorText(errCode))

	b := make([]byte, 0, 160+len(h.sendApp)+len(h.sendFac)+len(h.recvApp)+len(h.recvFac)+
		len(h.controlID)+len(controlID)+len(h.version)+len(h.charset)+2*len(reason))
	field := func(v string) { b = append(b, d.Field); b = append(b, v...) }

	b = append(b, "MSH"...)
	b = append(b, d.Field)
	b = append(b, d.EncodingCharacters()...)
	field(h.recvApp)
	field(h.recvFac)
	field(h.sendApp)
	field(h.sendFac)
	field(now.Format("20060102150405"))
	field("") // MSH-8 security
	field("ACK")
	b = append(b, d.Component)
	b = append(b, h.trigger...)
	if atLeast(h.version, 2, 3, 1) {
		b = append(b, d.Component)
		b = append(b, "ACK"...)
	}
	field(controlID)
	field(h.processing)
	field(h.version)
	if h.charset != "" {
		for n := 13; n <= 18; n++ {
			field("")
		}
		b = append(b, h.charset...)
	}
	b = append(b, '\r')

	b = append(b, "MSA"...)
	field(msa1)
	field(h.controlID)
	if !accepted {
		field(reason)
	}
	b = append(b, '\r')
	if accepted {
		return b
	}

	code3 := strconv.Itoa(errCode)
	b = append(b, "ERR"...)
	if atLeast(h.version, 2, 5, 0) {
		// ERR-3 CWE code^text^HL70357, ERR-4 severity, ERR-8 user message.
		field("")
		field("")
		field(code3)
		b = append(b, d.Component)
		b = append(b, errText...)
		b = append(b, d.Component)
		b = append(b, "HL70357"...)
		field("E")
		field("")
		field("")
		field("")
		field(reason)
	} else {
		// ERR-1 ELD: segment^sequence^field^code&text&HL70357.
		field("")
		b = append(b, d.Component, d.Component, d.Component)
		b = append(b, code3...)
		b = append(b, d.Subcomponent)
		b = append(b, errText...)
		b = append(b, d.Subcomponent)
		b = append(b, "HL70357"...)
	}
	b = append(b, '\r')
	return b
}

// atLeast compares an MSH-12 value such as 2.3, 2.5.1 or 2.5^DEU with a
// version; an unreadable version counts as new, the layout current
// receivers expect.
func atLeast(version string, major, minor, patch int) bool {
	want := [3]int{major, minor, patch}
	v := version
	if i := strings.IndexFunc(v, func(r rune) bool { return r != '.' && (r < '0' || r > '9') }); i >= 0 {
		v = v[:i]
	}
	parts := strings.Split(v, ".")
	for i := 0; i < 3; i++ {
		n := 0
		if i < len(parts) {
			var err error
			if n, err = strconv.Atoi(parts[i]); err != nil {
				return true
			}
		}
		if n != want[i] {
			return n > want[i]
		}
	}
	return true
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// ParseACK reads an acknowledgement from a peer: code is MSA-1 (AA, AE, AR,
// CA, CE or CR, upper-cased), controlIDAcked is MSA-2 (the MSH-10 it
// answers) and text the peer's explanation, decoded for display: MSA-3, or
// failing that ERR-8, ERR-3.2 or ERR-1.4.2. The text is the peer's own words
// and may quote message content: show it to the operator who sent the
// message, do not log it. ParseACK is lenient about the MSH content (many
// peers leave MSH-12 empty in ACKs) but needs a readable MSH and an MSA.
func ParseACK(raw []byte) (code, controlIDAcked, text string, err error) {
	m, err := parseStructure(raw)
	if err != nil {
		return "", "", "", fmt.Errorf("reading acknowledgement: %w", err)
	}
	msa, ok := m.first("MSA")
	if !ok {
		return "", "", "", fmt.Errorf("reading acknowledgement: no MSA segment: an HL7 acknowledgement must carry MSA-1 (AA, AE, AR, CA, CE or CR) and MSA-2")
	}
	code = strings.ToUpper(strings.TrimSpace(m.field(msa, 1, 0, 0)))
	switch code {
	case "AA", "AE", "AR", "CA", "CE", "CR":
	case "":
		return "", "", "", fmt.Errorf("reading acknowledgement: MSA-1 acknowledgement code is empty: want AA, AE, AR, CA, CE or CR")
	default:
		if len(code) > 4 {
			return "", "", "", fmt.Errorf("reading acknowledgement: MSA-1 acknowledgement code is not AA, AE, AR, CA, CE or CR")
		}
		return "", "", "", fmt.Errorf("reading acknowledgement: MSA-1 acknowledgement code %q is not AA, AE, AR, CA, CE or CR", code)
	}
	controlIDAcked = m.field(msa, 2, 0, 0)
	text = m.field(msa, 3, 0, 0)
	for _, seg := range m.segs {
		if text != "" {
			break
		}
		if m.is(seg, "ERR") {
			for _, p := range [][3]int{{8, 0, 0}, {3, 2, 0}, {1, 4, 2}} {
				if text = m.field(seg, p[0], p[1], p[2]); text != "" {
					break
				}
			}
		}
	}
	return code, controlIDAcked, m.delims.UnescapeText(text), nil
}

func (m *Message) first(id string) (string, bool) {
	for _, seg := range m.segs {
		if m.is(seg, id) {
			return seg, true
		}
	}
	return "", false
}
