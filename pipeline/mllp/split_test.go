package mllp

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestSplitMessages(t *testing.T) {
	m1 := "MSH|^~\\&|LAB|H|EHR|H|20240101||ORU^R01|1|P|2.5\rPID|1\rOBX|1\r"
	m2 := "MSH|^~\\&|LAB|H|EHR|H|20240101||ORU^R01|2|P|2.5\rPID|2\r"
	lf := func(s string) string { return strings.ReplaceAll(s, "\r", "\n") }
	crlf := func(s string) string { return strings.ReplaceAll(s, "\r", "\r\n") }
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"blank lines only", "\n\r\n  \n", nil},
		{"one CR", m1, []string{m1}},
		{"two CR", m1 + m2, []string{m1, m2}},
		{"two LF", lf(m1 + m2), []string{m1, m2}},
		{"two CRLF with blank lines", crlf(m1) + "\r\n\r\n" + crlf(m2), []string{m1, m2}},
		{"no final newline", strings.TrimSuffix(lf(m1), "\n"), []string{m1}},
		{"BOM", "\xef\xbb\xbf" + lf(m1), []string{m1}},
		{"BOM in frame", frame("\xef\xbb\xbf" + m1), []string{m1}},
		{"mixed endings", "MSH|a\r\nPID|1\nOBX|1\rMSH|b\n", []string{"MSH|a\rPID|1\rOBX|1\r", "MSH|b\r"}},
		{"batch envelope dropped", "FHS|^~\\&\nBHS|^~\\&\n" + lf(m1) + lf(m2) + "BTS|2\nFTS|1\n", []string{m1, m2}},
		{"lines before first MSH kept apart", "stray line\n" + lf(m1), []string{"stray line\r", m1}},
		{"MLLP framed", frame(m1) + frame(m2), []string{m1, m2}},
		{"MLLP framed with LF inside and noise", "noise\n" + frame(lf(m1)) + "\r\n" + frame(crlf(m2)), []string{m1, m2}},
		{"MLLP missing final EB", frame(m1) + "\x0b" + m2, []string{m1, m2}},
		{"MLLP restart", "\x0bMSH|half" + frame(m1), []string{"MSH|half\r", m1}},
		{"MLLP two messages in one frame", frame(m1 + m2), []string{m1, m2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, m := range SplitMessages([]byte(tc.in)) {
				got = append(got, string(m))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func FuzzSplitMessages(f *testing.F) {
	f.Add([]byte("MSH|a\nPID|1\nMSH|b\r\n"))
	f.Add([]byte(frame("MSH|a\rPID|1\r") + "x" + frame("MSH|b\r")))
	f.Add([]byte("\x0bMSH|a\x0bMSH|b\x1c"))
	f.Add([]byte("FHS|\nBHS|\nMSH|x\nBTS|\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs := SplitMessages(data)
		framedInput := bytes.IndexByte(data, StartBlock) >= 0
		mshLed := true // every message after the first starts with MSH
		total := 0
		for i, m := range msgs {
			if len(m) == 0 || m[len(m)-1] != CarriageReturn {
				t.Fatalf("message %d %q does not end in CR", i, m)
			}
			if bytes.ContainsAny(m, "\n\x0b\x1c") {
				t.Fatalf("message %d %q holds LF or framing bytes", i, m)
			}
			if bytes.Contains(m, []byte("\r\r")) {
				t.Fatalf("message %d %q holds an empty segment", i, m)
			}
			if i > 0 && !framedInput && !bytes.HasPrefix(m, []byte("MSH")) {
				t.Fatalf("message %d %q does not start with MSH", i, m)
			}
			if i > 0 && !bytes.HasPrefix(m, []byte("MSH")) {
				mshLed = false
			}
			total += len(m)
		}
		if total > 2*len(data)+1 {
			t.Fatalf("%d bytes out of %d input bytes", total, len(data))
		}
		// Splitting the messages again, framed or not, finds the same.
		var framed, plain bytes.Buffer
		for _, m := range msgs {
			if err := WriteFrame(&framed, m); err != nil {
				t.Fatal(err)
			}
			plain.Write(m)
		}
		resplit := map[string][][]byte{"framed": SplitMessages(framed.Bytes())}
		if mshLed { // else plain text cannot say where one message ends
			resplit["plain"] = SplitMessages(plain.Bytes())
		}
		for name, again := range resplit {
			if len(again) != len(msgs) {
				t.Fatalf("%s re-split: %d messages, want %d", name, len(again), len(msgs))
			}
			for i := range again {
				if !bytes.Equal(again[i], msgs[i]) {
					t.Fatalf("%s re-split message %d = %q, want %q", name, i, again[i], msgs[i])
				}
			}
		}
	})
}
