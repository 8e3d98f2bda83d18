package hl7

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

// oru1K is a 1 KiB lab result with a dozen OBX, the typical message size.
func oru1K() []byte {
	segs := []string{
		"MSH|^~\\&|LABSYS|CENTRAL LAB|EHR|GOOD HEALTH HOSPITAL|20240315120000||ORU^R01^ORU_R01|LAB-20240315-0042|P|2.5.1",
		"PID|1||PATID5678^^^GOODHEALTH^MR||TEST^PATIENT^A||19800202|F",
		"OBR|1|ORD1001|FIL2002|24331-1^LIPID PANEL^LN|||202403151100",
	}
	for i := 1; len(strings.Join(segs, "\r")) < 1000; i++ {
		segs = append(segs, fmt.Sprintf("OBX|%d|NM|2093-%d^ANALYTE %d^LN||%d|mg/dL|<200|N|||F", i, i, i, 100+i))
	}
	return []byte(strings.Join(segs, "\r") + "\r")
}

func BenchmarkParse(b *testing.B) {
	raw := oru1K()
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkACK(b *testing.B) {
	m, err := Parse(oru1K())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		ACK(m, flow.Accepted, 0, "", "ACK-1", now)
	}
}

func BenchmarkGet(b *testing.B) {
	m, err := Parse(oru1K())
	if err != nil {
		b.Fatal(err)
	}
	p, _ := ParsePath("OBX-5")
	b.ReportAllocs()
	for b.Loop() {
		m.ValuesPath(p)
	}
}
