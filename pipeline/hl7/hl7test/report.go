package hl7test

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
)

// Report is an ORU^R01 of size bytes (at least about 600) from a
// radiology system: a patient, an order and one OBX of type ED whose OBX-5
// holds a PDF-like document in Base64, as radiology, cardiology and
// pathology systems send their reports. The document is random bytes
// seeded from seed, so the message does not compress (a real PDF is
// already compressed) and two seeds give different bytes.
func Report(controlID, patientID string, seed uint64, size int) []byte {
	head := fmt.Appendf(nil, "MSH|^~\\&|RADSYS|RADIOLOGY|HL7EDGE|WARD3|20261130120000||ORU^R01^ORU_R01|%s|P|2.5.1\r"+
		"PID|1||%s^^^HOSP^MR||PATIENT^TEST\r"+
		"OBR|1|ORD-%s|FIL-%s|71046^Chest X-ray 2 views^CPT|||20261130115500\r"+
		"OBX|1|ED|18748-4^Diagnostic imaging study^LN||^application^pdf^Base64^", controlID, patientID, controlID, controlID)
	tail := []byte("||||||F\r")
	room := max(size-len(head)-len(tail), 16)
	doc := make([]byte, room/4*3)
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), byte(seed >> 32), byte(seed >> 40), byte(seed >> 48), byte(seed >> 56)})
	_, _ = rng.Read(doc)
	copy(doc, "%PDF-1.4\n")
	copy(doc[len(doc)-6:], "\n%%EOF")
	out := make([]byte, 0, len(head)+base64.StdEncoding.EncodedLen(len(doc))+len(tail))
	out = append(out, head...)
	out = base64.StdEncoding.AppendEncode(out, doc)
	return append(out, tail...)
}

// LargeReport is Report number n: control ID R<n>, patient MRN<n>.
func LargeReport(n, size int) []byte {
	return Report(fmt.Sprintf("R%07d", n), fmt.Sprintf("MRN%07d", n), uint64(n), size)
}
