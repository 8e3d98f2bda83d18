package deliver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/storage"
)

// appendPatients spools one message per entry of patients ("" for a message
// without PID) and returns their GUIDs and each one's patient.
func appendPatients(t *testing.T, sp *storage.Spool, patients ...string) []string {
	t.Helper()
	var guids []string
	for i, p := range patients {
		raw := fmt.Sprintf("MSH|^~\\&|A|B|C|D|20260101||ADT^A08|%d|P|2.5\r", i)
		if p != "" {
			raw += "PID|1||" + p + "^^^HOSP^MR||DOE^X\r"
		}
		r, err := sp.Append(context.Background(), storage.Entry{Source: "s", Raw: []byte(raw), Dests: []string{"d"}})
		if err != nil {
			t.Fatal(err)
		}
		guids = append(guids, r.GUID)
	}
	return guids
}

func pidKey(t *testing.T) func([]byte) string {
	p, err := hl7.ParsePath("PID-3.1")
	if err != nil {
		t.Fatal(err)
	}
	return KeyAt(p)
}

// byPatient returns, for each patient, the GUIDs of got that belong to it.
func byPatient(got, guids, patients []string) map[string][]string {
	idx := map[string]int{}
	for i, g := range guids {
		idx[g] = i
	}
	out := map[string][]string{}
	for _, g := range got {
		p := patients[idx[g]]
		out[p] = append(out[p], g)
	}
	return out
}

// TestLaneInBackoffHoldsOnlyItsKeys: patient A's first message fails until
// the test lets it through; B's and C's messages, and the message without a
// patient, are delivered meanwhile, and A's keep their order after.
func TestLaneInBackoffHoldsOnlyItsKeys(t *testing.T) {
	sp, _ := setup(t, 0)
	patients := []string{"A", "B", "A", "C", "B", "", "A", "C", "B", "C"}
	guids := appendPatients(t, sp, patients...)
	release := make(chan struct{})
	out := &scripted{fail: func(m *flow.Message) error {
		if m.GUID == guids[0] {
			select {
			case <-release:
			default:
				return errors.New("peer said AE")
			}
		}
		return nil
	}}
	comp := health.NewRegistry("", "", nil).Component(health.Destination, "d", "test")
	w := New("d", spoolQ{sp}, out, Options{Lanes: 3, LaneKey: pidKey(t), MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Health: comp})
	stop := run(t, w)
	defer stop()
	var others []string
	for i, p := range patients {
		if p != "A" {
			others = append(others, guids[i])
		}
	}
	waitFor(t, "every message of B, C and no patient delivered while A's first fails", func() bool {
		got := out.delivered()
		for _, g := range others {
			if !slices.Contains(got, g) {
				return false
			}
		}
		return true
	})
	for i, p := range patients {
		if p == "A" && slices.Contains(out.delivered(), guids[i]) {
			t.Fatalf("A's message %d was delivered while A's first is failing", i)
		}
	}
	if comp.State() != health.Down {
		t.Errorf("state %s while a lane holds a failing message, want down", comp.State())
	}
	close(release)
	waitFor(t, "everything delivered", func() bool { return len(out.delivered()) == len(patients) })
	got := byPatient(out.delivered(), guids, patients)
	for p, list := range byPatient(guids, guids, patients) {
		if !slices.Equal(got[p], list) {
			t.Errorf("patient %q: delivered %v, want %v", p, got[p], list)
		}
	}
	waitFor(t, "state up", func() bool { return comp.State() == health.Up })
}

// TestLanesDeliverInParallelAndReportHealth: four lanes have four requests
// in flight at once, and the health snapshot counts them busy.
func TestLanesDeliverInParallelAndReportHealth(t *testing.T) {
	sp, _ := setup(t, 0)
	var patients []string
	for i := range 40 {
		patients = append(patients, fmt.Sprintf("P%d", i%8))
	}
	guids := appendPatients(t, sp, patients...)
	gate := make(chan struct{})
	inFlight := make(chan struct{}, 64)
	out := &blocking{gate: gate, entered: inFlight}
	reg := health.NewRegistry("", "", nil)
	comp := reg.Component(health.Destination, "d", "test")
	w := New("d", spoolQ{sp}, out, Options{Lanes: 4, LaneKey: pidKey(t), Health: comp})
	stop := run(t, w)
	defer stop()
	for range 4 {
		select {
		case <-inFlight:
		case <-time.After(10 * time.Second):
			t.Fatal("four lanes did not have four requests in flight")
		}
	}
	snap := reg.Snapshot()
	d, _ := snap.Component(health.Destination, "d")
	if d.Lanes == nil || d.Lanes.Lanes != 4 || d.Lanes.Busy != 4 {
		t.Fatalf("health lanes %+v, want 4 lanes, 4 busy", d.Lanes)
	}
	w.Pause()
	close(gate)
	waitFor(t, "lanes blocked while paused", func() bool {
		snap := reg.Snapshot()
		d, _ := snap.Component(health.Destination, "d")
		return d.Lanes.Busy == 0 && d.Lanes.Blocked > 0
	})
	w.Resume()
	waitFor(t, "all delivered", func() bool { return len(out.delivered()) == len(guids) })
	got := byPatient(out.delivered(), guids, patients)
	for p, list := range byPatient(guids, guids, patients) {
		if !slices.Equal(got[p], list) {
			t.Errorf("patient %q: delivered %v, want %v", p, got[p], list)
		}
	}
}

// blocking holds every Deliver until gate is closed.
type blocking struct {
	scripted
	gate    chan struct{}
	entered chan struct{}
}

func (b *blocking) Deliver(ctx context.Context, m *flow.Message) error {
	b.entered <- struct{}{}
	select {
	case <-b.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.scripted.Deliver(ctx, m)
}

func TestKeyAt(t *testing.T) {
	k := pidKey(t)
	for raw, want := range map[string]string{
		"MSH|^~\\&|A|B|C|D|20260101||ADT^A08|1|P|2.5\rPID|1||MRN7^^^HOSP^MR\r": "MRN7",
		"MSH|^~\\&|A|B|C|D|20260101||ADT^A08|1|P|2.5\r":                        "",
		"not HL7": "",
	} {
		if got := k([]byte(raw)); got != want {
			t.Errorf("key of %q = %q, want %q", strings.SplitN(raw, "\r", 2)[0], got, want)
		}
	}
}

// TestLanesRunAgainStartsClean: a worker stopped with messages on its lanes
// and run again delivers each message once, in order per patient.
func TestLanesRunAgainStartsClean(t *testing.T) {
	sp, _ := setup(t, 0)
	var patients []string
	for i := range 24 {
		patients = append(patients, fmt.Sprintf("P%d", i%6))
	}
	guids := appendPatients(t, sp, patients...)
	gate := make(chan struct{})
	out := &blocking{gate: gate, entered: make(chan struct{}, 64)}
	w := New("d", spoolQ{sp}, out, Options{Lanes: 3, LaneKey: pidKey(t)})
	stop := run(t, w)
	for range 3 {
		<-out.entered
	}
	stop() // the three in flight fail with the context; the lanes hold more
	close(gate)
	stop = run(t, w)
	defer stop()
	waitFor(t, "all delivered", func() bool { return len(out.delivered()) >= len(guids) })
	time.Sleep(50 * time.Millisecond)
	got := out.delivered()
	if len(got) != len(guids) {
		t.Fatalf("delivered %d, want each of %d once", len(got), len(guids))
	}
	byP := byPatient(got, guids, patients)
	for p, list := range byPatient(guids, guids, patients) {
		if !slices.Equal(byP[p], list) {
			t.Errorf("patient %q: delivered %v, want %v", p, byP[p], list)
		}
	}
}
