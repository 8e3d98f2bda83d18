package hl7

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

func addSeeds(f *testing.F) {
	files, err := filepath.Glob("testdata/*.hl7")
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed corpus in testdata: %v", err)
	}
	for _, name := range files {
		raw, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	for _, s := range []string{
		"", "MSH", "MSH|", "MSH|^~\\&", "MSH|^~\\&|||||||A|B||2", "MSH|^~\\&\rMSA|AA|1",
		"MSH|^~\\&|A|B|C|D|1||ADT^A01|C|P|2.5\r\rPID|1\n\nOBX|1\r\n",
		"\x0bMSH|^~\\&|A|B|C|D|1||ADT^A01|C|P|2.5|||AL\r\x1c\r",
		"MSH|^~\\&|A|B|C|D|1||ADT^A01|C~D|P|2.5^X~Y|||AL|||\\F\\",
	} {
		f.Add([]byte(s))
	}
}

// FuzzParse: Parse never panics and allocates a fixed number of times; a
// refusal is a short *ParseError; ACKUnparsed always yields a parseable
// ACK; the ACK of any parsed message re-parses and names its MSH-10.
func FuzzParse(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		orig := bytes.Clone(raw)
		m, err := Parse(raw)
		if !bytes.Equal(raw, orig) {
			t.Fatal("Parse modified its input")
		}
		if !raceEnabled {
			// A fixed count whatever the input: the text copy, the segment
			// index and the Message, or an error and its formatting.
			limit := 3.0
			if err != nil {
				limit = 8
			}
			if n := testing.AllocsPerRun(1, func() { _, _ = Parse(raw) }); n > limit {
				t.Fatalf("Parse made %.0f allocations, want at most %.0f", n, limit)
			}
		}
		nak := ACKUnparsed(raw, flow.Rejected, ErrorCode(err), "refused", "K1", now)
		if _, perr := Parse(nak); perr != nil {
			t.Fatalf("ACKUnparsed does not parse: %v\n%q", perr, nak)
		}
		if code, _, _, aerr := ParseACK(nak); aerr != nil || (code != "AR" && code != "CR") {
			t.Fatalf("ACKUnparsed reads back as %q, %v", code, aerr)
		}
		if err != nil {
			if m != nil {
				t.Fatal("Parse returned both a message and an error")
			}
			if ErrorCode(err) == CodeInternalError || len(err.Error()) > 400 {
				t.Fatalf("refusal is not a short *ParseError: %v", err)
			}
			return
		}
		ctl, _ := m.Get("MSH-10")
		if m.Header().ControlID != ctl || ctl == "" {
			t.Fatalf("header control ID %q, MSH-10 %q", m.Header().ControlID, ctl)
		}
		for _, code := range []flow.Code{flow.Accepted, flow.RetryLater, flow.Rejected} {
			ack := ACK(m, code, CodeInternalError, "reason|with^delims\r", "ACK-1", now)
			a, err := Parse(ack)
			if err != nil {
				t.Fatalf("ACK does not parse: %v\n%q", err, ack)
			}
			if got, _ := a.Get("MSA-2"); got != ctl {
				t.Fatalf("ACK MSA-2 %q, message MSH-10 %q", got, ctl)
			}
			gotCode, acked, _, err := ParseACK(ack)
			if err != nil || acked != ctl || !strings.HasSuffix(gotCode, string(code)[1:]) {
				t.Fatalf("ParseACK = %q %q %v for %s", gotCode, acked, err, code)
			}
			if a.Header().SendingApp != m.Header().ReceivingApp || a.Header().ReceivingFacility != m.Header().SendingFacility {
				t.Fatal("ACK does not swap sender and receiver")
			}
		}
		if r := m.Raw(); !bytes.Equal(r, Normalize(raw)) {
			t.Fatal("Raw() differs from Normalize(raw)")
		}
		if m2, err := Parse(m.Raw()); err != nil || m2.Header() != m.Header() {
			t.Fatalf("canonical form does not re-parse the same: %v", err)
		}
	})
}

// FuzzNormalize: Normalize is idempotent, returns canonical input as is,
// never touches its input and leaves no LF, empty segment or end junk.
func FuzzNormalize(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		orig := bytes.Clone(raw)
		n := Normalize(raw)
		if !bytes.Equal(raw, orig) {
			t.Fatal("Normalize modified its input")
		}
		if len(n) == 0 {
			return
		}
		if bytes.IndexByte(n, '\n') >= 0 || bytes.Contains(n, []byte("\r\r")) || n[len(n)-1] != '\r' ||
			strings.IndexByte(leadJunk, n[0]) >= 0 || strings.IndexByte(trailJunk, n[len(n)-2]) >= 0 {
			t.Fatalf("not canonical: %q", n)
		}
		if again := Normalize(n); &again[0] != &n[0] {
			t.Fatal("Normalize copied an already canonical message")
		}
		if len(n) > len(raw)+1 {
			t.Fatalf("Normalize grew the message from %d to %d bytes", len(raw), len(n))
		}
	})
}
