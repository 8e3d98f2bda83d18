package refserver

import (
	"strings"
	"testing"
	"time"
)

// FuzzReceived: what the server writes it reads back, and no input panics
// the reader.
func FuzzReceived(f *testing.F) {
	f.Add("6f1c7a52-3b0e-4c1e-9d59-2f3c1d7e8a90", "MSG00042", true, "2025-01-01T12:00:00Z\tg\tc\tno\n")
	f.Add("g", "a\tb\r\nc", false, "x\ty")
	f.Add("", "", false, "")
	f.Fuzz(func(t *testing.T, guid, controlID string, dup bool, junk string) {
		_, _ = parseReceived(strings.NewReader(junk), "fuzz")
		if !validID(guid) {
			return
		}
		in := Received{Time: time.Unix(1_700_000_000, 123).UTC(), GUID: guid, ControlID: controlID, Duplicate: dup}
		got, err := parseReceived(strings.NewReader(formatReceived(in)), "fuzz")
		if err != nil || len(got) != 1 {
			t.Fatalf("parse(format(%+v)) = %+v, %v", in, got, err)
		}
		if got[0].GUID != guid || got[0].Duplicate != dup || !got[0].Time.Equal(in.Time) || strings.ContainsAny(got[0].ControlID, "\t\r\n") {
			t.Fatalf("round trip %+v -> %+v", in, got[0])
		}
	})
}
