package hl7

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

// msg joins segments with CR, the canonical form.
func msg(segs ...string) []byte { return []byte(strings.Join(segs, "\r") + "\r") }

// phi is planted in test messages where patient data would be; no error or
// ACK we generate may ever contain it.
const phi = "SECRETPATIENT"

var now = time.Date(2024, 3, 15, 8, 30, 5, 123, time.UTC)

func TestNormalize(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"canonical", "MSH|a\rPID|b\r", "MSH|a\rPID|b\r"},
		{"no final CR", "MSH|a\rPID|b", "MSH|a\rPID|b\r"},
		{"LF", "MSH|a\nPID|b\n", "MSH|a\rPID|b\r"},
		{"CRLF", "MSH|a\r\nPID|b\r\n", "MSH|a\rPID|b\r"},
		{"trailing blank lines", "MSH|a\rPID|b\n\n\r\n  \n", "MSH|a\rPID|b\r"},
		{"trailing junk", "MSH|a\rPID|b \x00\x1a\x1c\r\n", "MSH|a\rPID|b \r"},
		{"trailing space kept", "MSH|a\rPID|b  \r", "MSH|a\rPID|b  \r"},
		{"junk then blank line", "MSH|a\rPID|b\x00\r \t\n\x1a \n", "MSH|a\rPID|b\r"},
		{"trailing blank line with spaces", "MSH|a\rPID|b\r\n \t", "MSH|a\rPID|b\r"},
		{"leading junk", "\x0b\n\r  MSH|a\rPID|b\r\x1c\r", "MSH|a\rPID|b\r"},
		{"blank line inside", "MSH|a\r\r \t\rPID|b\r", "MSH|a\rPID|b\r"},
		{"mixed", "MSH|a\r\r\nPID|b\nOBX|c\r", "MSH|a\rPID|b\rOBX|c\r"},
		{"empty", "", ""},
		{"only whitespace", " \r\n\t\n", ""},
		{"keeps inner spaces", "MSH|a b \rPID| b", "MSH|a b \rPID| b\r"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := []byte(c.in)
			orig := bytes.Clone(in)
			got := Normalize(in)
			if string(got) != c.want {
				t.Fatalf("Normalize(%q) = %q, want %q", c.in, got, c.want)
			}
			if !bytes.Equal(in, orig) {
				t.Fatalf("Normalize modified its input: %q", in)
			}
			sameSlice := len(in) > 0 && len(got) > 0 && &got[0] == &in[0]
			if (c.in == c.want) != sameSlice && c.in != "" {
				t.Fatalf("canonical input should be returned as is (and only then): same=%v", sameSlice)
			}
			if again := Normalize(got); len(got) > 0 && &again[0] != &got[0] {
				t.Fatalf("Normalize of a normalized message copied it again")
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	good := "MSH|^~\\&|S|SF|R|RF|20240101||ADT^A01|CTL1|P|2.5"
	cases := []struct {
		name string
		raw  string
		code int
		want string
	}{
		{"empty", "", CodeSegmentSequenceError, "message is empty"},
		{"blank", "\r\n \n", CodeSegmentSequenceError, "message is empty"},
		{"PID first", "PID|1||" + phi + "\r" + good, CodeSegmentSequenceError, `first segment is "PID", not MSH: an HL7 v2 message must start with MSH`},
		{"batch", "FHS|^~\\&\rBHS|^~\\&\r" + good, CodeSegmentSequenceError, `first segment is FHS, not MSH: batch files`},
		{"garbage first", phi + " has a fever\r" + good, CodeSegmentSequenceError, "first segment does not start with MSH"},
		{"lower msh", "msh|^~\\&|", CodeSegmentSequenceError, "first segment does not start with MSH"},
		{"MSH only", "MSH", CodeRequiredFieldMissing, `MSH segment ends after "MSH"`},
		{"letter separator", "MSHX^~\\&X", CodeDataTypeError, `MSH-1 field separator 'X' is a letter, digit, space`},
		{"space separator", "MSH ^~\\& ", CodeDataTypeError, `MSH-1 field separator ' '`},
		{"short encoding", "MSH|^~|S|SF", CodeRequiredFieldMissing, `MSH-2 encoding characters "^~" are incomplete: need 4 (component, repetition, escape, subcomponent)`},
		{"no encoding", "MSH||S", CodeRequiredFieldMissing, `MSH-2 encoding characters "" are incomplete`},
		{"long encoding", "MSH^~\\&" + phi, CodeDataTypeError, "MSH-2 encoding characters are 16 characters long"},
		{"repeated encoding", "MSH|^^\\&|S", CodeDataTypeError, `MSH-2 encoding characters "^^\\&" repeat '^'`},
		{"encoding has letter", "MSH|^~\\a|S", CodeDataTypeError, "MSH-2 encoding character 4 ('a') is a letter"},
		{"stray line break", good + "\rPID|1||ID^^^X||" + phi + "\rmore text " + phi + "\r", CodeSegmentSequenceError, "segment 3 (after PID) does not start with a segment ID"},
		{"lowercase segment", good + "\rpid|1", CodeSegmentSequenceError, "segment 2 (after MSH) does not start with a segment ID"},
		{"long segment ID", good + "\rPIDX|1", CodeSegmentSequenceError, "segment 2 (after MSH) does not start"},
		{"second MSH", good + "\rPID|1\r" + good, CodeSegmentSequenceError, "segment 3 is a second MSH"},
		{"no MSH-9", "MSH|^~\\&|S|SF|R|RF|20240101|||CTL1|P|2.5", CodeRequiredFieldMissing, "MSH-9 message type is empty"},
		{"MSH-9 ends early", "MSH|^~\\&|S|SF", CodeRequiredFieldMissing, "MSH-9 message type is empty"},
		{"no MSH-9.1", "MSH|^~\\&|S|SF|R|RF|20240101||^A01|CTL1|P|2.5", CodeRequiredFieldMissing, "MSH-9.1 message code is empty"},
		{"no MSH-10", "MSH|^~\\&|S|SF|R|RF|20240101||ADT^A01||P|2.5", CodeRequiredFieldMissing, "MSH-10 control ID is empty"},
		{"long MSH-10", "MSH|^~\\&|S|SF|R|RF|20240101||ADT^A01|" + strings.Repeat(phi, 20) + "|P|2.5", CodeDataTypeError, "MSH-10 control ID is 260 bytes long: HL7 allows at most 199"},
		{"control char MSH-10", "MSH|^~\\&|S|SF|R|RF|20240101||ADT^A01|A\x00B|P|2.5", CodeDataTypeError, "MSH-10 control ID contains control characters"},
		{"no MSH-12", "MSH|^~\\&|S|SF|R|RF|20240101||ADT^A01|CTL1|P", CodeRequiredFieldMissing, "MSH-12 version is empty"},
		{"empty MSH-12.1", "MSH|^~\\&|S|SF|R|RF|20240101||ADT^A01|CTL1|P|^USA", CodeRequiredFieldMissing, "MSH-12 version is empty"},
		{"v3", "MSH|^~\\&|S|SF|R|RF|20240101||ADT^A01|CTL1|P|3.0", CodeUnsupportedVersion, `MSH-12 version "3.0" is not an HL7 v2 version`},
		{"long version", "MSH|^~\\&|S|SF|R|RF|20240101||ADT^A01|CTL1|P|" + phi + phi, CodeUnsupportedVersion, "MSH-12 version is not an HL7 v2 version"},
		{"name in version", "MSH|^~\\&|S|SF|R|RF|20240101||ADT^A01|CTL1|P|SECRETDOE", CodeUnsupportedVersion, `MSH-12 version "SECRETDOE" is not`},
		{"name as first segment", "DOE|JOHN\r" + good, CodeSegmentSequenceError, `first segment is "DOE", not MSH`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Parse([]byte(c.raw))
			if err == nil {
				t.Fatalf("Parse accepted it: %v", m.Header())
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *ParseError: %v", err, err)
			}
			if pe.Code != c.code || ErrorCode(err) != c.code {
				t.Errorf("code %d, want %d", pe.Code, c.code)
			}
			// The sender hears what was found; the error (logged) does not.
			if got := SenderText(err); !strings.Contains(got, c.want) {
				t.Errorf("sender text %q\nwant it to contain %q", got, c.want)
			}
			if strings.Contains(err.Error(), phi) || strings.Contains(err.Error(), "SECRETDOE") || strings.ContainsAny(err.Error(), "'") {
				t.Errorf("error leaks message content: %q", err)
			}
		})
	}
	if ErrorCode(errors.New("disk on fire")) != CodeInternalError {
		t.Error("a foreign error should map to 207")
	}
}

func TestParseTestdata(t *testing.T) {
	want := map[string]Header{
		"adt_a01_v25.hl7": {SendingApp: "REGADT", SendingFacility: "GOOD HEALTH HOSPITAL", ReceivingApp: "HL7EDGE",
			ReceivingFacility: "WARD3", Timestamp: "20240315083000", MessageType: "ADT", TriggerEvent: "A01",
			ControlID: "MSG00001", ProcessingID: "P", Version: "2.5", AcceptAckType: "AL", AppAckType: "NE", Charset: "UNICODE UTF-8"},
		"oru_r01_v251.hl7": {SendingApp: "LABSYS", SendingFacility: "CENTRAL LAB", ReceivingApp: "EHR",
			ReceivingFacility: "GOOD HEALTH HOSPITAL", Timestamp: "202403151200", MessageType: "ORU", TriggerEvent: "R01",
			ControlID: "LAB-20240315-0042", ProcessingID: "P", Version: "2.5.1"},
		"adt_a04_v23.hl7": {SendingApp: "ADMIT", SendingFacility: "CLINIC", ReceivingFacility: "HL7EDGE",
			Timestamp: "20240101120000", MessageType: "ADT", TriggerEvent: "A04", ControlID: "0000000042", ProcessingID: "T", Version: "2.3"},
		"custom_delims.hl7": {SendingApp: "SENDER", SendingFacility: "FAC", ReceivingApp: "RECV", ReceivingFacility: "FAC2",
			Timestamp: "20240202020202", MessageType: "ORU", TriggerEvent: "R01", ControlID: "CTL-CUSTOM-1", ProcessingID: "P", Version: "2.4"},
		"lf_endings.hl7": {SendingApp: "MONITOR", SendingFacility: "BED12", ReceivingApp: "HL7EDGE", ReceivingFacility: "WARD3",
			Timestamp: "20240315090000", MessageType: "ORU", TriggerEvent: "R01", ControlID: "MON-000123", ProcessingID: "P", Version: "2.3.1"},
		"crlf_v27_truncation.hl7": {SendingApp: "ORDERS", SendingFacility: "GH", ReceivingApp: "LIS", ReceivingFacility: "LAB",
			Timestamp: "20240315101010+0100", MessageType: "OML", TriggerEvent: "O21", ControlID: "ORD-777", ProcessingID: "P",
			Version: "2.7", AcceptAckType: "AL", AppAckType: "AL"},
		"ack_ae_v25.hl7": {SendingApp: "LIS", SendingFacility: "LAB", ReceivingApp: "HL7EDGE", ReceivingFacility: "WARD3",
			Timestamp: "20240315101011", MessageType: "ACK", TriggerEvent: "O21", ControlID: "ACK-1", ProcessingID: "P", Version: "2.5"},
	}
	files, _ := filepath.Glob("testdata/*.hl7")
	if len(files) != len(want) {
		t.Fatalf("testdata has %d messages, test expects %d", len(files), len(want))
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Parse(raw)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if got := m.Header(); got != want[filepath.Base(f)] {
			t.Errorf("%s header:\n got %+v\nwant %+v", f, got, want[filepath.Base(f)])
		}
		if !bytes.Equal(m.Raw(), Normalize(raw)) {
			t.Errorf("%s: Raw() is not the normalized input", f)
		}
	}
}

func mustParse(t testing.TB, raw []byte) *Message {
	t.Helper()
	m, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestGet(t *testing.T) {
	m := mustParse(t, msg(
		"MSH|^~\\&|APP^1.2.3^ISO|FAC||WARD|20240101||ORU^R01^ORU_R01|C1|P|2.5.1",
		"PID|1||ID1^^^AUTH^MR~ID2^^^SSA^SS||EXAMPLE&VAN&DER^ALEX^^^DR|\"\"",
		"OBR|1|||GLU^GLUCOSE",
		"OBX|1|NM|GLU^GLUCOSE||5.5|mmol/L",
		"OBX|2|ST|NOTE||a \\F\\ b",
		"OBX|3|NM",
		"ZPI|x",
	))
	cases := []struct {
		path string
		want string
		ok   bool
	}{
		{"MSH-1", "|", true},
		{"MSH-1.1", "|", true},
		{"MSH-1.2", "", false},
		{"MSH-2", "^~\\&", true},
		{"MSH-2.2", "", false},
		{"MSH-3", "APP^1.2.3^ISO", true},
		{"MSH-3.1", "APP", true},
		{"MSH-3.2", "1.2.3", true},
		{"MSH-5", "", false},
		{"MSH-9", "ORU^R01^ORU_R01", true},
		{"MSH-9.1", "ORU", true},
		{"msh-9.2", "R01", true},
		{"MSH-10", "C1", true},
		{"MSH-12", "2.5.1", true},
		{"MSH-40", "", false},
		{"PID-3", "ID1^^^AUTH^MR", true},
		{"PID-3.1", "ID1", true},
		{"PID-3.4", "AUTH", true},
		{"PID-3.9", "", false},
		{"PID-5.1", "EXAMPLE&VAN&DER", true},
		{"PID-5.1.2", "VAN", true},
		{"PID-5.1.3", "DER", true},
		{"PID-5.1.4", "", false},
		{"PID-5.2.1", "ALEX", true},
		{"PID-5.5", "DR", true},
		{"PID-6", `""`, true},
		{"OBX-5", "5.5", true},
		{"OBR-4.1", "GLU", true},
		{"ZPI-1", "x", true},
		{"PV1-3", "", false},
		{"PID-3.x", "", false},
		{"PID3", "", false},
	}
	for _, c := range cases {
		got, ok := m.Get(c.path)
		if got != c.want || ok != c.ok {
			t.Errorf("Get(%q) = %q, %v; want %q, %v", c.path, got, ok, c.want, c.ok)
		}
	}
	if got := m.Values("OBX-5"); !equal(got, []string{"5.5", "a \\F\\ b", ""}) {
		t.Errorf("Values(OBX-5) = %q", got)
	}
	if got := m.Values("OBX-1"); !equal(got, []string{"1", "2", "3"}) {
		t.Errorf("Values(OBX-1) = %q", got)
	}
	if got := m.Values("PV1-3"); got != nil {
		t.Errorf("Values of an absent segment = %q, want nil", got)
	}
	if got := m.Values("bad path"); got != nil {
		t.Errorf("Values of an invalid path = %q, want nil", got)
	}
	if got := m.Values("MSH-9.1"); !equal(got, []string{"ORU"}) {
		t.Errorf("Values(MSH-9.1) = %q", got)
	}
	if m.Segments() != 7 {
		t.Errorf("Segments() = %d", m.Segments())
	}
}

func TestCustomDelimiters(t *testing.T) {
	raw, err := os.ReadFile("testdata/custom_delims.hl7")
	if err != nil {
		t.Fatal(err)
	}
	m := mustParse(t, raw)
	want := Delimiters{Field: '#', Component: '$', Repetition: '%', Escape: '@', Subcomponent: '!'}
	if m.Delimiters() != want {
		t.Fatalf("delimiters %+v", m.Delimiters())
	}
	for path, v := range map[string]string{"MSH-1": "#", "MSH-2": "$%@!", "MSH-9.2": "R01", "PID-3.4": "AUTH", "PID-5.2": "DANA", "OBX-5": "value with @F@ escaped hash"} {
		if got, _ := m.Get(path); got != v {
			t.Errorf("Get(%s) = %q, want %q", path, got, v)
		}
	}
	if got := m.Delimiters().UnescapeText("value with @F@ escaped hash"); got != "value with # escaped hash" {
		t.Errorf("UnescapeText = %q", got)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParsePath(t *testing.T) {
	good := map[string]Path{
		"MSH-9":      {Segment: "MSH", Field: 9},
		"MSH-9.1":    {Segment: "MSH", Field: 9, Component: 1},
		"pid-5.1.2":  {Segment: "PID", Field: 5, Component: 1, Subcomponent: 2},
		" ZP1-999 ":  {Segment: "ZP1", Field: 999},
		"OBX-5.10.3": {Segment: "OBX", Field: 5, Component: 10, Subcomponent: 3},
	}
	for s, want := range good {
		p, err := ParsePath(s)
		if err != nil || p != want {
			t.Errorf("ParsePath(%q) = %+v, %v; want %+v", s, p, err, want)
			continue
		}
		if q, err := ParsePath(p.String()); err != nil || q != p {
			t.Errorf("String() %q does not read back: %+v %v", p.String(), q, err)
		}
	}
	bad := map[string]string{
		"":                         "no '-'",
		"PID3":                     "no '-'",
		"PID.3":                    "no '-'",
		"PI-3":                     "segment must be 3",
		"1ID-3":                    "segment must be 3",
		"PIDX-3":                   "segment must be 3",
		"PID-":                     "field must be a number",
		"PID-0":                    "field must be a number from 1 to 999",
		"PID-1000":                 "field must be a number",
		"PID-+3":                   "field must be a number",
		"PID-3.":                   "component must be a number",
		"PID-3.0":                  "component must be",
		"PID-3.1.x":                "subcomponent must be",
		"PID-3.1.1.1":              "too many parts",
		"PID-3 .1":                 "field must be",
		"PID--3":                   "field must be",
		"PID-99999999999999999999": "field must be",
	}
	for s, want := range bad {
		_, err := ParsePath(s)
		if err == nil {
			t.Errorf("ParsePath(%q) accepted", s)
			continue
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "for example PID-3.1") {
			t.Errorf("ParsePath(%q) error %q, want it to contain %q and an example", s, err, want)
		}
	}
}

func TestEscapeText(t *testing.T) {
	d := DefaultDelimiters()
	cases := map[string]string{
		"plain":          "plain",
		"a|b^c~d\\e&f":   `a\F\b\S\c\R\d\E\e\T\f`,
		"line\r\nbreak":  "line  break",
		"tab\there\x00.": "tab here .",
	}
	for in, want := range cases {
		got := d.EscapeText(in)
		if got != want {
			t.Errorf("EscapeText(%q) = %q, want %q", in, got, want)
		}
		if !strings.ContainsAny(in, "\r\n\t\x00") && d.UnescapeText(got) != in {
			t.Errorf("UnescapeText(EscapeText(%q)) = %q", in, d.UnescapeText(got))
		}
	}
	d27 := d
	d27.Truncation = '#'
	if got := d27.EscapeText("a#b"); got != `a\P\b` {
		t.Errorf("truncation escape = %q", got)
	}
	if got := d27.UnescapeText(`a\P\b`); got != "a#b" {
		t.Errorf("truncation unescape = %q", got)
	}
	for in, want := range map[string]string{
		`line\.br\two`: "line\ntwo",
		`\X0D\ kept`:   `\X0D\ kept`,
		`\P\ kept`:     `\P\ kept`,
		`dangling \F`:  `dangling \F`,
	} {
		if got := d.UnescapeText(in); got != want {
			t.Errorf("UnescapeText(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestParseAllocations holds Parse to a fixed number of allocations
// whatever the message size, and to a bounded number of bytes even for a
// message made of the smallest possible segments.
func TestParseAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	canonical := oru1K()
	lf := bytes.ReplaceAll(canonical, []byte("\r"), []byte("\n"))
	for name, raw := range map[string][]byte{"canonical": canonical, "LF": lf} {
		if n := testing.AllocsPerRun(20, func() { _, _ = Parse(raw) }); n > 3 {
			t.Errorf("%s: Parse made %.0f allocations, want at most 3", name, n)
		}
	}
	// 256 KiB of four-byte segments: the worst case for the segment index.
	big := append([]byte("MSH|^~\\&|S|F|R|F|1||ADT^A01|C|P|2.5\r"), bytes.Repeat([]byte("ZZZ\r"), 64<<10)...)
	var before, after runtimeMem
	before.read()
	m, err := Parse(big)
	after.read()
	if err != nil || m.Segments() != 64<<10+1 {
		t.Fatalf("Parse: %v", err)
	}
	if used := after.total - before.total; used > 6*uint64(len(big)) {
		t.Errorf("Parse of %d bytes allocated %d bytes, want at most 6x", len(big), used)
	}
}

func TestACK(t *testing.T) {
	orig := msg(
		"MSH|^~\\&|LAB|CENTRAL^1.2^ISO|EHR|HOSP|202403151200||ORU^R01^ORU_R01|LAB-42|P^T|2.5.1|||||USA|8859/1",
		"PID|1||ID^^^A||"+phi,
	)
	m := mustParse(t, orig)
	cases := []struct {
		name    string
		code    flow.Code
		errCode int
		reason  string
		want    []string
	}{
		{"AA", flow.Accepted, 0, "ignored", []string{
			"MSH|^~\\&|EHR|HOSP|LAB|CENTRAL^1.2^ISO|20240315083005||ACK^R01^ACK|ACK-1|P^T|2.5.1||||||8859/1",
			"MSA|AA|LAB-42",
		}},
		{"AE spool full", flow.RetryLater, CodeInternalError, "spool is full (2GiB): retry later", []string{
			"MSH|^~\\&|EHR|HOSP|LAB|CENTRAL^1.2^ISO|20240315083005||ACK^R01^ACK|ACK-1|P^T|2.5.1||||||8859/1",
			"MSA|AE|LAB-42|spool is full (2GiB): retry later",
			"ERR|||207^Application internal error^HL70357|E||||spool is full (2GiB): retry later",
		}},
		{"AR escaped reason", flow.Rejected, CodeUnsupportedMessageType, "type ORU^R99 | not routed\r\nfix it", []string{
			"MSH|^~\\&|EHR|HOSP|LAB|CENTRAL^1.2^ISO|20240315083005||ACK^R01^ACK|ACK-1|P^T|2.5.1||||||8859/1",
			"MSA|AR|LAB-42|type ORU\\S\\R99 \\F\\ not routed  fix it",
			"ERR|||200^Unsupported message type^HL70357|E||||type ORU\\S\\R99 \\F\\ not routed  fix it",
		}},
		{"unknown code answers AE, errCode 0 is 207", flow.Code("??"), 0, "x", []string{
			"MSH|^~\\&|EHR|HOSP|LAB|CENTRAL^1.2^ISO|20240315083005||ACK^R01^ACK|ACK-1|P^T|2.5.1||||||8859/1",
			"MSA|AE|LAB-42|x",
			"ERR|||207^Application internal error^HL70357|E||||x",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ACK(m, c.code, c.errCode, c.reason, "ACK-1", now)
			if want := strings.Join(c.want, "\r") + "\r"; string(got) != want {
				t.Fatalf("ACK:\n got %q\nwant %q", got, want)
			}
			checkACK(t, got, strings.Split(c.want[1], "|")[1], "LAB-42")
		})
	}
}

func TestACKModesAndVersions(t *testing.T) {
	cases := []struct {
		name string
		msh  string
		code flow.Code
		want []string
	}{
		{"enhanced accept", "MSH|^~\\&|A|B|C|D|1||ADT^A01|X1|P|2.5|||AL|NE", flow.Accepted, []string{
			"MSH|^~\\&|C|D|A|B|20240315083005||ACK^A01^ACK|K|P|2.5", "MSA|CA|X1"}},
		{"enhanced by MSH-16 only, error", "MSH|^~\\&|A|B|C|D|1||ADT^A01|X1|P|2.5||||AL", flow.RetryLater, []string{
			"MSH|^~\\&|C|D|A|B|20240315083005||ACK^A01^ACK|K|P|2.5", "MSA|CE|X1|why", "ERR|||101^Required field missing^HL70357|E||||why"}},
		{"enhanced reject", "MSH|^~\\&|A|B|C|D|1||ADT^A01|X1|P|2.5|||ER|ER", flow.Rejected, []string{
			"MSH|^~\\&|C|D|A|B|20240315083005||ACK^A01^ACK|K|P|2.5", "MSA|CR|X1|why", "ERR|||101^Required field missing^HL70357|E||||why"}},
		{"v2.3 old ERR and no structure", "MSH|^~\\&|A|B|C|D|1||ADT^A04|X1|T|2.3", flow.Rejected, []string{
			"MSH|^~\\&|C|D|A|B|20240315083005||ACK^A04|K|T|2.3", "MSA|AR|X1|why", "ERR|^^^101&Required field missing&HL70357"}},
		{"v2.4 old ERR with structure", "MSH|^~\\&|A|B|C|D|1||ADT^A04|X1|T|2.4", flow.RetryLater, []string{
			"MSH|^~\\&|C|D|A|B|20240315083005||ACK^A04^ACK|K|T|2.4", "MSA|AE|X1|why", "ERR|^^^101&Required field missing&HL70357"}},
		{"v2.3.1 has structure", "MSH|^~\\&|A|B|C|D|1||ADT^A04|X1|T|2.3.1", flow.Accepted, []string{
			"MSH|^~\\&|C|D|A|B|20240315083005||ACK^A04^ACK|K|T|2.3.1", "MSA|AA|X1"}},
		{"v2 bare", "MSH|^~\\&|A|B|C|D|1||ADT^A04|X1|T|2", flow.Accepted, []string{
			"MSH|^~\\&|C|D|A|B|20240315083005||ACK^A04|K|T|2", "MSA|AA|X1"}},
		{"no trigger", "MSH|^~\\&|A|B|C|D|1||QRY|X1||2.5", flow.Accepted, []string{
			"MSH|^~\\&|C|D|A|B|20240315083005||ACK^^ACK|K||2.5", "MSA|AA|X1"}},
		{"custom delimiters", "MSH#$%@!#A$1#B#C#D#1##ORU$R01#X1#P#2.4", flow.Rejected, []string{
			"MSH#$%@!#C#D#A$1#B#20240315083005##ACK$R01$ACK#K#P#2.4", "MSA#AR#X1#why", "ERR#$$$101!Required field missing!HL70357"}},
		{"v2.7 truncation kept", "MSH|^~\\&#|A|B|C|D|1||OML^O21^OML_O21|X1|P|2.7|||AL|AL", flow.RetryLater, []string{
			"MSH|^~\\&#|C|D|A|B|20240315083005||ACK^O21^ACK|K|P|2.7", "MSA|CE|X1|why", "ERR|||101^Required field missing^HL70357|E||||why"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := mustParse(t, msg(c.msh))
			got := ACK(m, c.code, CodeRequiredFieldMissing, "why", "K", now)
			want := strings.Join(c.want, "\r") + "\r"
			if string(got) != want {
				t.Fatalf("ACK:\n got %q\nwant %q", got, want)
			}
			checkACK(t, got, strings.Split(strings.ReplaceAll(c.want[1], "#", "|"), "|")[1], "X1")
		})
	}
}

func TestACKControlIDFallback(t *testing.T) {
	m := mustParse(t, msg("MSH|^~\\&|A|B|C|D|1||ADT^A01|X1|P|2.5"))
	a := mustParse(t, ACK(m, flow.Accepted, 0, "", "", now))
	if got := a.Header().ControlID; got != "20240315083005.000000123" {
		t.Errorf("fallback MSH-10 = %q", got)
	}
	a = mustParse(t, ACK(m, flow.Accepted, 0, "", "id|with^delims", now))
	if got := a.Header().ControlID; got != `id\F\with\S\delims` {
		t.Errorf("escaped MSH-10 = %q", got)
	}
}

// checkACK proves an ACK parses as a message and as an acknowledgement.
func checkACK(t *testing.T, ack []byte, code, acked string) {
	t.Helper()
	a, err := Parse(ack)
	if err != nil {
		t.Fatalf("our ACK does not parse: %v\n%q", err, ack)
	}
	if a.Header().MessageType != "ACK" {
		t.Errorf("ACK MSH-9.1 = %q", a.Header().MessageType)
	}
	gotCode, gotAcked, _, err := ParseACK(ack)
	if err != nil || gotCode != code || gotAcked != acked {
		t.Errorf("ParseACK = %q, %q, %v; want %q, %q", gotCode, gotAcked, err, code, acked)
	}
	if bytes.Contains(ack, []byte(phi)) {
		t.Errorf("ACK leaks message content: %q", ack)
	}
}

func TestACKUnparsed(t *testing.T) {
	cases := []struct {
		name string
		raw  string
		want []string
	}{
		{"missing MSH-12 keeps delimiters and control ID", "MSH#$%@!#A$1#B#C#D#1##ADT$A01#CTL9#P#\rPID#" + phi, []string{
			"MSH#$%@!#C#D#A$1#B#20240315083005##ACK$A01$ACK#K#P#2.5", "MSA#AR#CTL9#bad", "ERR###101$Required field missing$HL70357#E####bad"}},
		{"old version recovered", "MSH|^~\\&|A|B|C|D|1||ADT^A04|CTL9|P|2.3|||AL\rgarbage " + phi, []string{
			"MSH|^~\\&|C|D|A|B|20240315083005||ACK^A04|K|P|2.3", "MSA|CR|CTL9|bad", "ERR|^^^101&Required field missing&HL70357"}},
		{"bad encoding characters", "MSH|^~|APP^X|B|C|D|1||ADT^A01|CTL9|P|2.4\r", []string{
			"MSH|^~\\&|C|D|APP\\S\\X|B|20240315083005||ACK^^ACK|K|P|2.4", "MSA|AR|CTL9|bad", "ERR|^^^101&Required field missing&HL70357"}},
		{"not HL7 version", "MSH|^~\\&|A|B|C|D|1||ADT^A01|CTL9|P|3.0", []string{
			"MSH|^~\\&|C|D|A|B|20240315083005||ACK^A01^ACK|K|P|2.5", "MSA|AR|CTL9|bad", "ERR|||101^Required field missing^HL70357|E||||bad"}},
		{"letter separator", "MSHX^~\\&XAXBXCXDX1XXADT^A01XCTL9", []string{
			"MSH|^~\\&|||||20240315083005||ACK^^ACK|K||2.5", "MSA|AR||bad", "ERR|||101^Required field missing^HL70357|E||||bad"}},
		{"garbage", phi + "\x00\xff", []string{
			"MSH|^~\\&|||||20240315083005||ACK^^ACK|K||2.5", "MSA|AR||bad", "ERR|||101^Required field missing^HL70357|E||||bad"}},
		{"empty", "", []string{
			"MSH|^~\\&|||||20240315083005||ACK^^ACK|K||2.5", "MSA|AR||bad", "ERR|||101^Required field missing^HL70357|E||||bad"}},
		{"huge sender dropped", "MSH|^~\\&|" + strings.Repeat("A", 300) + "|B|C|D|1||ADT^A01|CTL9|P|2.5|", []string{
			"MSH|^~\\&|C|D||B|20240315083005||ACK^A01^ACK|K|P|2.5", "MSA|AR|CTL9|bad", "ERR|||101^Required field missing^HL70357|E||||bad"}},
		{"control characters dropped", "MSH|^~\\&|A\tB|B|C|D|1||ADT^A01|CTL\x009|P|2.5|", []string{
			"MSH|^~\\&|C|D||B|20240315083005||ACK^A01^ACK|K|P|2.5", "MSA|AR||bad", "ERR|||101^Required field missing^HL70357|E||||bad"}},
		{"leading LF", "\n\nMSH|^~\\&|A|B|C|D|1||ADT^A01|CTL9|P|", []string{
			"MSH|^~\\&|C|D|A|B|20240315083005||ACK^A01^ACK|K|P|2.5", "MSA|AR|CTL9|bad", "ERR|||101^Required field missing^HL70357|E||||bad"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ACKUnparsed([]byte(c.raw), flow.Rejected, CodeRequiredFieldMissing, "bad", "K", now)
			if want := strings.Join(c.want, "\r") + "\r"; string(got) != want {
				t.Fatalf("ACKUnparsed:\n got %q\nwant %q", got, want)
			}
			msa := strings.FieldsFunc(c.want[1], func(r rune) bool { return r == '|' || r == '#' })
			acked := ""
			if len(msa) == 4 {
				acked = msa[2]
			}
			checkACK(t, got, msa[1], acked)
		})
	}
}

func TestParseACK(t *testing.T) {
	cases := []struct {
		name             string
		raw              string
		code, acked, txt string
		err              string
	}{
		{"AA", "MSH|^~\\&|A|B|C|D|1||ACK|K|P|2.5\rMSA|AA|C1", "AA", "C1", "", ""},
		{"lenient MSH, lowercase code", "MSH|^~\\&\rMSA|ca|C1", "CA", "C1", "", ""},
		{"MSA-3 text decoded", "MSH|^~\\&\rMSA|AE|C1|busy \\T\\ full\rERR|||207^x^HL70357|E||||other", "AE", "C1", "busy & full", ""},
		{"ERR-8 text", "MSH|^~\\&\rMSA|AR|C1\rERR|||207^internal^HL70357|E||||user \\F\\ text", "AR", "C1", "user | text", ""},
		{"ERR-3.2 text", "MSH|^~\\&\rMSA|AR|C1\rERR|||207^internal^HL70357|E", "AR", "C1", "internal", ""},
		{"ERR-1 text", "MSH|^~\\&\rMSA|CR|C1\rERR|^^^101&Required field missing&HL70357", "CR", "C1", "Required field missing", ""},
		{"second ERR", "MSH|^~\\&\rMSA|AR|C1\rERR|\rERR|||1^two", "AR", "C1", "two", ""},
		{"LF ends", "MSH|^~\\&\nMSA|AA|C1\n", "AA", "C1", "", ""},
		{"no MSA", "MSH|^~\\&|A|B|C|D|1||ACK|K|P|2.5", "", "", "", "no MSA segment"},
		{"empty code", "MSH|^~\\&\rMSA||C1", "", "", "", "MSA-1 acknowledgement code is empty"},
		{"bad code", "MSH|^~\\&\rMSA|OK|C1", "", "", "", `MSA-1 acknowledgement code "OK" is not AA`},
		{"long code", "MSH|^~\\&\rMSA|" + phi + "|C1", "", "", "", "MSA-1 acknowledgement code is not AA"},
		{"not HL7", "HTTP/1.1 400 Bad Request\r\n", "", "", "", "first segment does not start with MSH"},
		{"empty", "", "", "", "", "message is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, acked, txt, err := ParseACK([]byte(c.raw))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !strings.HasPrefix(err.Error(), "reading acknowledgement: ") {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				if strings.Contains(err.Error(), phi) {
					t.Errorf("error leaks content: %v", err)
				}
				return
			}
			if err != nil || code != c.code || acked != c.acked || txt != c.txt {
				t.Fatalf("ParseACK = %q %q %q %v; want %q %q %q", code, acked, txt, err, c.code, c.acked, c.txt)
			}
		})
	}
	raw, _ := os.ReadFile("testdata/ack_ae_v25.hl7")
	if code, acked, txt, err := ParseACK(raw); code != "AE" || acked != "ORD-777" || txt != "Database busy" || err != nil {
		t.Errorf("testdata ACK: %q %q %q %v", code, acked, txt, err)
	}
}

func TestErrorText(t *testing.T) {
	for _, c := range []int{0, 100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207} {
		if ErrorText(c) == "" {
			t.Errorf("no text for table 0357 code %d", c)
		}
	}
	if ErrorText(999) != "" {
		t.Error("unknown code has text")
	}
}
