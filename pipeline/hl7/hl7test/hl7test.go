// Package hl7test makes HL7 messages for tests and benchmarks. Only tests
// import it.
package hl7test

import (
	"fmt"
	"os"
	"strings"
)

// analytes of a basic metabolic panel and blood count: LOINC code, name,
// unit, reference range, and a typical value to vary around.
var analytes = []struct {
	code, name, unit, ref string
	typical               float64
}{
	{"2951-2", "Sodium", "mmol/L", "136-145", 140},
	{"2823-3", "Potassium", "mmol/L", "3.5-5.1", 4.2},
	{"2075-0", "Chloride", "mmol/L", "98-107", 102},
	{"2028-9", "Carbon dioxide", "mmol/L", "22-29", 25},
	{"3094-0", "Urea nitrogen", "mg/dL", "7-20", 14},
	{"2160-0", "Creatinine", "mg/dL", "0.6-1.2", 0.9},
	{"2345-7", "Glucose", "mg/dL", "70-99", 92},
	{"17861-6", "Calcium", "mg/dL", "8.6-10.3", 9.4},
	{"6690-2", "Leukocytes", "10*3/uL", "4.5-11.0", 7.1},
	{"789-8", "Erythrocytes", "10*6/uL", "4.2-5.4", 4.8},
	{"718-7", "Hemoglobin", "g/dL", "12.0-16.0", 13.9},
	{"777-3", "Platelets", "10*3/uL", "150-400", 260},
}

// LabResult is an ORU^R01 of about 1.3 KiB: a patient, an order and twelve
// numeric results, with control ID, identifiers and values different for
// every n, so that it compresses as real traffic does (about 2x with S2)
// and not as a repeated line would.
func LabResult(n int) []byte {
	var b strings.Builder
	h := uint32(n)*2654435761 + 12345 // Knuth's multiplicative hash: cheap, deterministic variety
	fmt.Fprintf(&b, "MSH|^~\\&|LABSYS|CENTRAL LAB|HL7EDGE|WARD %d|20261130%02d%02d%02d||ORU^R01^ORU_R01|B%07d|P|2.5.1\r",
		n%40, h%24, h/24%60, h/1440%60, n)
	fmt.Fprintf(&b, "PID|1||MRN%07d^^^HOSP^MR||PATIENT%d^TEST^%c||19%02d%02d%02d|%c|||%d HIGH ST^^TOWN^ST^%05d\r",
		n, n%997, 'A'+rune(h%26), 40+h%60, 1+h%12, 1+h%28, "FM"[h%2], 1+h%200, h%100000)
	fmt.Fprintf(&b, "ORC|RE|ORD%07d|FIL%07d||CM\r", n, h%10000000)
	fmt.Fprintf(&b, "OBR|1|ORD%07d|FIL%07d|80048^Basic metabolic panel^CPT|||20261130%02d%02d00\r", n, h%10000000, h%24, h%60)
	for i, a := range analytes {
		h = h*1103515245 + 12345
		v := a.typical * (0.8 + float64(h%400)/1000)
		flag := "N"
		if h%9 == 0 {
			flag = "H"
		}
		fmt.Fprintf(&b, "OBX|%d|NM|%s^%s^LN||%.1f|%s|%s|%s|||F|||20261130%02d%02d\r", i+1, a.code, a.name, v, a.unit, a.ref, flag, h%24, h%60)
	}
	return []byte(b.String())
}

// loremBody is the padding of the benchmarks' first message body: twelve
// identical OBX lines, which compress about tenfold.
var loremBody = strings.Repeat("OBX|1|TX|NOTE^Note||Lorem ipsum dolor sit amet consectetur adipiscing elit|\r", 12)

// Lorem is the 1 KiB message the benchmarks sent before LabResult, kept so
// that figures stay comparable with earlier ones.
func Lorem(n int) []byte {
	return fmt.Appendf(nil, "MSH|^~\\&|BENCH|LAB|GW|HOSP|20261122||ORU^R01|B%07d|P|2.5.1\rPID|1||MRN%07d\r%s", n, n, loremBody)
}

// BenchMessages is what the benchmarks send: LabResult, or Lorem when
// HL7EDGE_BENCH_BODY=lorem.
func BenchMessages() func(n int) []byte {
	if os.Getenv("HL7EDGE_BENCH_BODY") == "lorem" {
		return Lorem
	}
	return LabResult
}
