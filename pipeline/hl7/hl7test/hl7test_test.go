package hl7test_test

import (
	"bytes"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/hl7/hl7test"
)

func TestLabResultParsesAndVaries(t *testing.T) {
	a, b := hl7test.LabResult(1), hl7test.LabResult(2)
	if bytes.Equal(a, b) {
		t.Fatal("two lab results are the same")
	}
	for _, raw := range [][]byte{a, b} {
		m, err := hl7.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header().ControlID == "" {
			t.Fatal("no control ID")
		}
		if len(raw) < 1000 || len(raw) > 1600 {
			t.Errorf("a lab result of %d bytes; benchmarks count on the 1 KiB class", len(raw))
		}
	}
}
