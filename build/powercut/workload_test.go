package powercut

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7/hl7test"
)

// Large reports: 1 message in largeEvery on each connection, between
// largeMin and largeMax bytes, spread evenly on a log scale (as many of
// 256-512 KiB as of 2-4 MiB). Badger puts every value of 256 KiB or more
// in its value log. 1 in archiveEvery of them also goes to the file
// destination; the rest only to the host's receiver, so the guest's disk
// does not fill with them over a long campaign.
const (
	largeEvery   = 8
	largeMin     = 256 << 10
	largeMax     = 4 << 20
	archiveEvery = 8
	refuseEvery  = 3 // 1 in 3 reports and notes go to rejects instead of reports
)

// reportSize is a random size from largeMin to largeMax, log-uniform.
func reportSize() int {
	return int(largeMin * math.Pow(largeMax/largeMin, rand.Float64()))
}

// message is connection conn's nth message: a large report (class R), a
// cardiology note (C), or a lab result for one of the connection's patients
// (L). Reports and notes go to the reports receiver (or, one in
// refuseEvery, marked NOWHERE, to rejects), lab results to both web
// services; the file destination takes lab results, notes and a few
// reports.
func message(conn, n int) (id string, msg []byte) {
	switch {
	case n%largeEvery == 0:
		id = fmt.Sprintf("R%d-%07d", conn, n)
		msg = hl7test.Report(id, fmt.Sprintf("MRN%d-R", conn), uint64(conn)<<32|uint64(n), reportSize())
		if n%(largeEvery*archiveEvery) == 0 {
			msg = bytes.Replace(msg, []byte("|HL7EDGE|"), []byte("|ARCHIVE|"), 1)
		}
		if refused(id) {
			msg = bytes.Replace(msg, []byte("|WARD3|"), []byte("|NOWHERE|"), 1)
		}
		return id, msg
	case n%largeEvery == largeEvery/2:
		id = fmt.Sprintf("C%d-%07d", conn, n)
		to := "WARD3"
		if refused(id) {
			to = "NOWHERE"
		}
		return id, fmt.Appendf(nil, "MSH|^~\\&|CARDIO|HOSP|GW|%s|20261130||ORU^R01|%s|P|2.5.1\rPID|1||MRN%d-C\rOBX|1|TX|ECG||sinus rhythm %d||||||F\r", to, id, conn, n)
	}
	id = fmt.Sprintf("L%d-%07d", conn, n)
	return id, fmt.Appendf(nil, "MSH|^~\\&|LAB|HOSP|GW|WARD3|20261130||ORU^R01|%s|P|2.5.1\rPID|1||%s\rOBX|1|NM|GLU||%d|mg/dL\r", id, patientOf(conn, n), n%300)
}

// probe is the EIO campaign's message n on its own connection (4): small,
// to the one-lane web service only, so the marked write that fails is the
// spool's. Its NTE carries probeToken(n), which the faults match.
func probe(n int) (id string, msg []byte) {
	id = fmt.Sprintf("Q%d-%07d", probeConn, n)
	return id, fmt.Appendf(nil, "MSH|^~\\&|PROBE|HOSP|GW|WARD3|20261130||ORU^R01|%s|P|2.5.1\rPID|1||MRN%d-Q\rOBX|1|NM|GLU||%d|mg/dL\rNTE|1||%s\r", id, probeConn, n%300, probeToken(n))
}

// probeToken is probe n's mark: 40 base32 characters of a SHA-256 of n,
// as good as random and found nowhere else in the workload. The faults
// must match something the spool's commit-log write still holds as it
// was sent, and the log S2-compresses its records: LZ compression
// replaces a run of 4 bytes or more seen earlier in the record (the MSH
// of the lab result before it, "|PROBE|", the digits of the control ID)
// with a back-reference, so message text is gone from the write. A random
// token has nothing earlier to refer to and stays literal, with three
// precautions. Its letters are lower case, which the messages and keys
// around it hardly use. No 4 characters repeat within it (one in about
// 1,600 random tokens of this length has a repeat, which S2 may turn into
// a back-reference). And the faults match only its middle (probeMark): a
// back-reference just before it runs on into its first characters when
// they continue the earlier text ("|1||M" of "PID|1||MRN" took one
// token's M), and one just after it can reach back into its last. It is
// a hash of n, not drawn at random, so that the one who arms the fault
// and the one who sends the probe get the same.
func probeToken(n int) string {
	for i := 0; ; i++ {
		h := sha256.Sum256(fmt.Appendf(nil, "powercut probe %d/%d", n, i))
		t := strings.ToLower(base32.StdEncoding.EncodeToString(h[:25]))
		if !repeats(t, 4) {
			return t
		}
	}
}

// repeats says whether some k characters occur twice in s.
func repeats(s string, k int) bool {
	for i := 1; i+k <= len(s); i++ {
		if strings.Contains(s[:i+k-1], s[i:i+k]) {
			return true
		}
	}
	return false
}

const probeConn = 4

// Where each class of message must end up.
const (
	toArchive = 1 << iota
	toEHR
	toLanes
	toReports
	toRejects
)

// routes says which destinations a control ID was sent to.
func routes(id string) int {
	if len(id) > 0 && id[0] == 'P' { // pulled from the mailbox
		return toArchive | toEHR
	}
	class, _, n, ok := rigID(id)
	if !ok {
		return 0
	}
	switch class {
	case 'L':
		return toArchive | toEHR | toLanes
	case 'C', 'R':
		to := toReports
		if refused(id) {
			to = toRejects
		}
		if class == 'C' || n%(largeEvery*archiveEvery) == 0 {
			to |= toArchive
		}
		return to
	case 'Q':
		return toEHR
	}
	return 0
}

// refused says whether id goes to rejects, whose receiver answers AR: the
// guest must keep it as a dead letter.
func refused(id string) bool {
	class, _, n, ok := rigID(id)
	return ok && (class == 'R' || class == 'C') && (n/(largeEvery/2))%refuseEvery == 0
}

// verdict is one message's exchange as the sender saw it.
type verdict struct {
	ID             string
	Sent, Answered time.Time
	Code           string // MSA-1, or "" without an answer
	Bytes          int
}

// ackCode is MSA-1 of an ACK, or "?" when it has none.
func ackCode(ack []byte) string {
	i := bytes.Index(ack, []byte("MSA|"))
	if i < 0 || len(ack) < i+6 {
		return "?"
	}
	return string(ack[i+4 : i+6])
}
