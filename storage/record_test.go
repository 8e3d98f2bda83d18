package storage

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/hl7edge/hl7edge/pipeline/hl7/hl7test"
)

func roundTrip(t *testing.T, r *record) (*record, []byte) {
	t.Helper()
	val := r.encode()
	got, err := decodeRecord(val)
	if err != nil {
		t.Fatalf("decode what encode wrote: %v", err)
	}
	if got.GUID != r.GUID || got.Seq != r.Seq || !got.Received.Equal(r.Received) || got.Source != r.Source ||
		strings.Join(got.Dests, ",") != strings.Join(r.Dests, ",") || got.Reason != r.Reason ||
		got.Attempts != r.Attempts || !bytes.Equal(got.Raw, r.Raw) {
		t.Fatalf("round trip changed the record:\n got %+v\nwant %+v", got, r)
	}
	return got, val
}

// A record reads back exactly as it was stored, whatever the body holds.
func TestRecordRoundTrip(t *testing.T) {
	for _, raw := range [][]byte{hl7test.LabResult(7), nil, []byte("MSH|^~\\&|A|B|C|D|1||ADT^A01|1|P|2.5\r")} {
		roundTrip(t, &record{GUID: uuid.New(), Seq: 42, Received: time.Unix(0, 1764500000123456789), Source: "mllp-in",
			Dests: []string{"lis", "archive"}, Reason: "no route", Attempts: 3, Raw: raw})
	}
}

// A reason is cut to maxReason, on a character boundary, so that a
// receiver's long error text cannot push a record past recordOverhead.
func TestRecordReasonIsCut(t *testing.T) {
	long := strings.Repeat("é", 100<<10) // two bytes each: a cut may fall inside one
	r := &record{GUID: uuid.New(), Seq: 1, Received: time.Unix(1, 0), Source: "s", Dests: []string{"d"}, Reason: long, Raw: hl7test.LabResult(1)}
	got, err := decodeRecord(r.encode())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Reason) > maxReason || !strings.HasSuffix(got.Reason, "…") || !utf8.ValidString(got.Reason) ||
		!strings.HasPrefix(long, strings.TrimSuffix(got.Reason, "…")) {
		t.Fatalf("reason of %d bytes stored as %d bytes (valid UTF-8 %v), want at most %d ending in …",
			len(long), len(got.Reason), utf8.ValidString(got.Reason), maxReason)
	}
	if r.Reason != long {
		t.Fatal("encode changed the caller's record")
	}
	if !bytes.Equal(got.Raw, r.Raw) {
		t.Fatal("the message changed with its reason cut")
	}
}

func TestRecordCorruptHeaderIsRefused(t *testing.T) {
	val := (&record{GUID: uuid.New(), Seq: 1, Received: time.Unix(1, 0), Source: "source", Dests: []string{"d"}, Raw: hl7test.LabResult(1)}).encode()
	for name, b := range map[string][]byte{
		"empty":           nil,
		"unknown version": append([]byte{9}, val[1:]...),
		"cut in header":   val[:40],
	} {
		if _, err := decodeRecord(b); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: err %v, want errCorrupt", name, err)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	r := &record{GUID: uuid.New(), Seq: 5, Received: time.Unix(2, 0), Source: "s", Dests: []string{"a", "b"}, Reason: "why", Raw: hl7test.LabResult(5)}
	f.Add(r.encode())
	r.Raw = []byte("MSH|short")
	f.Add(r.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, errCorrupt) {
				t.Fatalf("error %v does not say the record is corrupt", err)
			}
			return
		}
		roundTrip(t, got)
	})
}
