package hl7test_test

import (
	"bytes"
	"compress/flate"
	"encoding/base64"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/hl7/hl7test"
)

// A report is as large as asked, parses, carries a decodable document in
// OBX-5.5, and does not compress: the rig counts on it to fill Badger's
// value log with what it is told to.
func TestReportSizeParsesAndDoesNotCompress(t *testing.T) {
	for _, size := range []int{1000, 256 << 10, 4 << 20} {
		raw := hl7test.LargeReport(size, size)
		if len(raw) > size || len(raw) < size-4 {
			t.Errorf("asked for %d bytes, got %d", size, len(raw))
		}
		m, err := hl7.Parse(raw)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if id := m.Header().ControlID; id == "" {
			t.Fatalf("size %d: no control ID", size)
		}
		enc, _ := m.Get("OBX-5.5")
		doc, err := base64.StdEncoding.DecodeString(enc)
		if err != nil || !bytes.HasPrefix(doc, []byte("%PDF-")) {
			t.Fatalf("size %d: OBX-5.5 is no Base64 PDF (%v)", size, err)
		}
		var z bytes.Buffer
		w, _ := flate.NewWriter(&z, flate.BestSpeed)
		_, _ = w.Write(doc)
		_ = w.Close()
		if z.Len() < len(doc)*95/100 {
			t.Errorf("size %d: the document compresses to %d of %d bytes", size, z.Len(), len(doc))
		}
	}
	if bytes.Equal(hl7test.LargeReport(1, 4096)[200:], hl7test.LargeReport(2, 4096)[200:]) {
		t.Error("two seeds gave the same document")
	}
}
