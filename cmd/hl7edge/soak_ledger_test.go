package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

// The soak's ledger: every message any sender offered, what the gateway
// answered, and, at the end, where each one arrived. The checks here are
// the promises of docs/design.md restated over that record.

// soakKind says where a message must end up.
type soakKind int

const (
	kindEHR     soakKind = iota // ADT/ORU, P: ehr and archive
	kindArchive                 // SIU, P: archive only
	kindTest                    // processing ID T: the rubbish bin eats it, nowhere
	kindBad                     // MSH-12 3.0: AR, nowhere
	kindFill                    // large ORU for the quota fault: ehr and archive
)

func (k soakKind) String() string {
	return [...]string{"ehr", "archive-only", "test", "bad", "fill"}[k]
}

func (k soakKind) toEHR() bool     { return k == kindEHR || k == kindFill }
func (k soakKind) toArchive() bool { return k == kindEHR || k == kindArchive || k == kindFill }

// soakMsg is one control ID.
type soakMsg struct {
	id, stream string
	kind       soakKind
	sum        [32]byte // SHA-256 of the exact bytes sent
	aa         bool     // answered AA (positive) at least once
	ae         int      // answers AE (or LIS01 NAKs to the last frame)
	ar         int      // answers AR
	unknown    int      // attempts whose outcome the sender never learned
}

// soakLedger is shared by every sender.
type soakLedger struct {
	mu      sync.Mutex
	msgs    map[string]*soakMsg
	acked   map[string][]string // stream -> control IDs in the order they were AA'd
	streams []string
	sent    int // attempts, including retries of the same control ID
	aeTotal int
	odd     []string // answers that make no sense (wrong MSA-2, AR for a good message)
}

func newSoakLedger() *soakLedger {
	return &soakLedger{msgs: map[string]*soakMsg{}, acked: map[string][]string{}}
}

// attempt records that raw is about to be offered.
func (l *soakLedger) attempt(stream, id string, kind soakKind, raw []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent++
	m := l.msgs[id]
	if m == nil {
		if !slices.Contains(l.streams, stream) {
			l.streams = append(l.streams, stream)
		}
		m = &soakMsg{id: id, stream: stream, kind: kind, sum: sha256.Sum256(raw)}
		l.msgs[id] = m
	}
}

// answer records the gateway's answer to the last attempt of id: "AA",
// "AE", "AR", or "" for an outcome the sender never learned.
func (l *soakLedger) answer(id, code string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.msgs[id]
	switch code {
	case "AA", "CA":
		if m.aa {
			l.odd = append(l.odd, fmt.Sprintf("%s answered AA twice", id))
			return
		}
		m.aa = true
		l.acked[m.stream] = append(l.acked[m.stream], id)
		if m.kind == kindBad {
			l.odd = append(l.odd, fmt.Sprintf("%s has MSH-12 3.0 and was answered AA, want AR", id))
		}
	case "AE", "CE":
		m.ae++
		l.aeTotal++
	case "AR", "CR":
		m.ar++
		if m.kind != kindBad {
			l.odd = append(l.odd, fmt.Sprintf("%s (%s) was answered AR, want AA or AE", id, m.kind))
		}
	default:
		m.unknown++
	}
}

func (l *soakLedger) oddity(s string) {
	l.mu.Lock()
	l.odd = append(l.odd, s)
	l.mu.Unlock()
}

func (l *soakLedger) aeCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.aeTotal
}

// soakCopy is one delivered copy of a message.
type soakCopy struct {
	guid string
	sum  [32]byte
}

// soakDelivered is what arrived: the archive directory (one file per
// GUID, no order) and the web service (received.log, in order, and one
// stored file per GUID).
type soakDelivered struct {
	archive  map[string][]soakCopy // control ID -> one entry per <GUID>.hl7 file
	ehrLog   []refserver.Received  // every post, in arrival order
	ehrFiles map[string]soakCopy   // GUID -> the stored file
}

// readSoakDelivered reads the archive and the web service's store.
func readSoakDelivered(archiveDir, storeDir string) (soakDelivered, error) {
	d := soakDelivered{archive: map[string][]soakCopy{}, ehrFiles: map[string]soakCopy{}}
	files, err := filepath.Glob(filepath.Join(archiveDir, "*.hl7"))
	if err != nil {
		return d, err
	}
	for _, f := range files {
		id, c, err := readSoakCopy(f)
		if err != nil {
			return d, err
		}
		d.archive[id] = append(d.archive[id], c)
	}
	d.ehrLog, err = refserver.ReadReceived(storeDir)
	if err != nil {
		return d, fmt.Errorf("web service log: %w", err)
	}
	for _, r := range d.ehrLog {
		if _, ok := d.ehrFiles[r.GUID]; ok {
			continue
		}
		id, c, err := readSoakCopy(filepath.Join(storeDir, r.GUID+".hl7"))
		if err != nil {
			return d, err
		}
		if id != r.ControlID {
			return d, fmt.Errorf("web service store %s.hl7 holds control ID %s, received.log says %s", r.GUID, id, r.ControlID)
		}
		d.ehrFiles[r.GUID] = c
	}
	return d, nil
}

func readSoakCopy(path string) (string, soakCopy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", soakCopy{}, err
	}
	m, err := hl7.Parse(b)
	if err != nil {
		return "", soakCopy{}, fmt.Errorf("%s: %w", path, err)
	}
	return m.Header().ControlID, soakCopy{guid: strings.TrimSuffix(filepath.Base(path), ".hl7"), sum: sha256.Sum256(b)}, nil
}

// soakVerdict is the outcome of checking the ledger against deliveries.
type soakVerdict struct {
	acked, refusedAE, refusedAR, aeThenAA, unknown int
	ackedByKind                                    map[soakKind]int
	deliveredEHR, deliveredArchive                 int // distinct control IDs
	ehrPosts, ehrDuplicates                        int // posts, and posts of a GUID seen before
	unknownDelivered                               int // outcome never learned by the sender, but delivered
	lost                                           int // (control ID, destination) pairs AA'd and missing
	problems                                       []string
}

func (v *soakVerdict) problem(format string, a ...any) {
	v.problems = append(v.problems, fmt.Sprintf(format, a...))
}

// verifySoak checks the promises:
//   - every AA'd message is at every destination it matched, once in the
//     archive, byte for byte, and at the web service under the same GUID;
//   - a message no destination should have (T, AR, AE-only) is nowhere;
//   - duplicates at the web service repeat one GUID;
//   - per stream, the web service saw AA'd messages first in the order
//     they were AA'd (a repeat of an earlier one later is allowed);
//   - nothing arrives that no sender sent.
func verifySoak(l *soakLedger, d soakDelivered) soakVerdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := soakVerdict{ackedByKind: map[soakKind]int{}}
	v.problems = append(v.problems, l.odd...)

	ehr := map[string][]string{} // control ID -> GUIDs of its posts, in order
	firstAt := map[string]int{}  // control ID -> index of its first post
	seenGUID := map[string]bool{}
	for i, r := range d.ehrLog {
		v.ehrPosts++
		if seenGUID[r.GUID] {
			v.ehrDuplicates++
		}
		seenGUID[r.GUID] = true
		if _, ok := firstAt[r.ControlID]; !ok {
			firstAt[r.ControlID] = i
		}
		ehr[r.ControlID] = append(ehr[r.ControlID], r.GUID)
	}
	v.deliveredEHR = len(ehr)
	v.deliveredArchive = len(d.archive)

	for id := range d.archive {
		if l.msgs[id] == nil {
			v.problem("archive holds control ID %s, which no sender sent", id)
		}
	}
	for id := range ehr {
		if l.msgs[id] == nil {
			v.problem("the web service received control ID %s, which no sender sent", id)
		}
	}

	ids := make([]string, 0, len(l.msgs))
	for id := range l.msgs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := l.msgs[id]
		arch, posts := d.archive[id], ehr[id]
		if m.ae > 0 {
			v.refusedAE++
		}
		if m.ar > 0 {
			v.refusedAR++
		}
		if m.unknown > 0 && !m.aa {
			v.unknown++
		}
		// Whatever the answers, one control ID is one spooled message: one
		// GUID everywhere.
		guids := map[string]bool{}
		for _, c := range arch {
			guids[c.guid] = true
		}
		for _, g := range posts {
			guids[g] = true
		}
		if len(guids) > 1 {
			v.problem("control ID %s (%s) was delivered under %d GUIDs %v: a duplicate must carry the GUID of the first copy", id, m.stream, len(guids), sortedKeys(guids))
		}
		for _, c := range arch {
			if c.sum != m.sum {
				v.problem("archive copy %s of %s differs from the bytes sent", c.guid, id)
			}
		}
		for _, g := range uniq(posts) {
			if c, ok := d.ehrFiles[g]; ok && c.sum != m.sum {
				v.problem("web service copy %s of %s differs from the bytes sent", g, id)
			}
		}
		delivered := len(arch) > 0 || len(posts) > 0
		if !m.aa {
			switch {
			case m.unknown > 0:
				if delivered {
					v.unknownDelivered++
				}
				// Its fate was never told: either way is honest, but it
				// must still go only where it matched.
				if len(posts) > 0 && !m.kind.toEHR() {
					v.problem("%s (%s) reached the web service but does not match ehr", id, m.kind)
				}
				if len(arch) > 0 && !m.kind.toArchive() {
					v.problem("%s (%s) reached the archive but matches no destination", id, m.kind)
				}
			case delivered:
				v.problem("%s was refused (AE %d, AR %d) and never AA'd, yet delivered (archive %d, web service %d): a refusal must mean not stored", id, m.ae, m.ar, len(arch), len(posts))
			}
			continue
		}
		v.acked++
		v.ackedByKind[m.kind]++
		if m.ae > 0 {
			v.aeThenAA++
		}
		switch {
		case m.kind.toArchive() && len(arch) == 0:
			v.lost++
			v.problem("LOST: %s (%s, stream %s) was AA'd but is not in the archive", id, m.kind, m.stream)
		case !m.kind.toArchive() && len(arch) > 0:
			v.problem("%s (%s) was delivered to the archive, which it must not reach", id, m.kind)
		}
		switch {
		case m.kind.toEHR() && len(posts) == 0:
			v.lost++
			v.problem("LOST: %s (%s, stream %s) was AA'd but never reached the web service", id, m.kind, m.stream)
		case !m.kind.toEHR() && len(posts) > 0:
			v.problem("%s (%s) reached the web service, which it does not match", id, m.kind)
		}
	}

	// Order at the web service, per stream: the first arrival of AA'd
	// messages follows the order of their AAs.
	for _, s := range l.streams {
		last, lastID := -1, ""
		for _, id := range l.acked[s] {
			at, ok := firstAt[id]
			if !ok || !l.msgs[id].kind.toEHR() {
				continue
			}
			if at < last {
				v.problem("order: stream %s had %s AA'd before %s, but the web service first received %s after %s (post %d < %d)", s, lastID, id, lastID, id, at, last)
			}
			if at > last {
				last, lastID = at, id
			}
		}
	}
	return v
}

func uniq(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestSoakVerifierCatches proves the soak's checks can fail: each broken
// delivery record below must be reported, and the intact one must not.
func TestSoakVerifierCatches(t *testing.T) {
	raw := func(id string) []byte { return []byte("MSH|^~\\&|S|F|R|H|20261122||ORU^R01|" + id + "|P|2.5.1\r") }
	sum := func(id string) [32]byte { return sha256.Sum256(raw(id)) }
	build := func() (*soakLedger, soakDelivered) {
		l := newSoakLedger()
		for _, m := range []struct {
			id   string
			kind soakKind
			code string
		}{
			{"A1", kindEHR, "AA"}, {"A2", kindArchive, "AA"}, {"A3", kindTest, "AA"},
			{"A4", kindBad, "AR"}, {"A5", kindEHR, "AE"}, {"A6", kindEHR, "AA"}, {"A7", kindEHR, ""},
		} {
			l.attempt("s1", m.id, m.kind, raw(m.id))
			l.answer(m.id, m.code)
		}
		d := soakDelivered{
			archive: map[string][]soakCopy{
				"A1": {{"g1", sum("A1")}}, "A2": {{"g2", sum("A2")}}, "A6": {{"g6", sum("A6")}},
			},
			ehrLog:   []refserver.Received{{GUID: "g1", ControlID: "A1"}, {GUID: "g6", ControlID: "A6"}, {GUID: "g1", ControlID: "A1", Duplicate: true}},
			ehrFiles: map[string]soakCopy{"g1": {"g1", sum("A1")}, "g6": {"g6", sum("A6")}},
		}
		return l, d
	}
	l, d := build()
	if v := verifySoak(l, d); len(v.problems) != 0 || v.acked != 4 || v.ehrDuplicates != 1 || v.refusedAE != 1 || v.refusedAR != 1 {
		t.Fatalf("intact record: %+v", v)
	}
	cases := map[string]struct {
		breakIt func(*soakLedger, *soakDelivered)
		want    string
	}{
		"lost in archive": {func(_ *soakLedger, d *soakDelivered) { delete(d.archive, "A2") }, "LOST: A2"},
		"lost upstream": {func(_ *soakLedger, d *soakDelivered) {
			d.ehrLog = d.ehrLog[:1]
		}, "LOST: A6"},
		"two GUIDs": {func(_ *soakLedger, d *soakDelivered) {
			d.ehrLog = append(d.ehrLog, refserver.Received{GUID: "gX", ControlID: "A6"})
		}, "under 2 GUIDs"},
		"two archive files": {func(_ *soakLedger, d *soakDelivered) {
			d.archive["A1"] = append(d.archive["A1"], soakCopy{"g9", sum("A1")})
		}, "under 2 GUIDs"},
		"out of order": {func(_ *soakLedger, d *soakDelivered) {
			d.ehrLog[0], d.ehrLog[1] = d.ehrLog[1], d.ehrLog[0]
		}, "order: stream s1"},
		"test message delivered": {func(_ *soakLedger, d *soakDelivered) { d.archive["A3"] = []soakCopy{{"g3", sum("A3")}} }, "A3 (test) was delivered"},
		"AR delivered":           {func(_ *soakLedger, d *soakDelivered) { d.archive["A4"] = []soakCopy{{"g4", sum("A4")}} }, "A4 was refused"},
		"AE delivered": {func(_ *soakLedger, d *soakDelivered) {
			d.ehrLog = append(d.ehrLog, refserver.Received{GUID: "g5", ControlID: "A5"})
		}, "A5 was refused"},
		"misrouted": {func(_ *soakLedger, d *soakDelivered) {
			d.ehrLog = append(d.ehrLog, refserver.Received{GUID: "g2", ControlID: "A2"})
		}, "A2 (archive-only) reached the web service"},
		"corrupted": {func(_ *soakLedger, d *soakDelivered) { d.archive["A6"][0].sum[0] ^= 1 }, "differs from the bytes sent"},
		"phantom": {func(_ *soakLedger, d *soakDelivered) {
			d.archive["ZZ"] = []soakCopy{{"gz", sum("ZZ")}}
		}, "no sender sent"},
		"AR for a good message": {func(l *soakLedger, _ *soakDelivered) {
			l.attempt("s1", "A8", kindEHR, raw("A8"))
			l.answer("A8", "AR")
		}, "A8 (ehr) was answered AR"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			l, d := build()
			c.breakIt(l, &d)
			v := verifySoak(l, d)
			if !slices.ContainsFunc(v.problems, func(p string) bool { return strings.Contains(p, c.want) }) {
				t.Fatalf("want a problem containing %q, got %q", c.want, v.problems)
			}
		})
	}
}
