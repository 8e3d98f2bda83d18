package intake

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/route"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/storage"
)

func newIntake(t *testing.T) (*Intake, *storage.Spool, *health.Registry, *[]string) {
	t.Helper()
	sp, err := storage.Open(storage.Config{Dir: t.TempDir(), MaxBytes: 16 << 20}, storage.Options{Destinations: []string{"ehr"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	ehr, _ := route.Compile(route.Match{All: []string{"MSH-9.1 in ADT,ORU"}})
	bin, _ := route.Compile(route.Match{Any: []string{"MSH-11.1 in T"}})
	r := route.New([]route.Destination{{Name: "tests", Rubbish: true, Match: bin}, {Name: "ehr", Match: ehr}})
	reg := health.NewRegistry("gw", "test", nil)
	var alarms []string
	in := New(sp, r, Options{Health: reg, Alarm: func(kind, _ string) { alarms = append(alarms, kind) }})
	return in, sp, reg, &alarms
}

func ack(t *testing.T, o flow.Outcome) (code, acked, text string) {
	t.Helper()
	code, acked, text, err := hl7.ParseACK(o.ACK)
	if err != nil {
		t.Fatalf("ACK does not parse: %v\n%q", err, o.ACK)
	}
	return
}

func TestOutcomes(t *testing.T) {
	in, sp, reg, _ := newIntake(t)
	ctx := context.Background()
	cases := []struct {
		name, raw string
		code      flow.Code
		msa       string
		queued    int64
	}{
		{"accepted", "MSH|^~\\&|LAB|W|EHR|H|20261122||ORU^R01|C1|P|2.5.1\nPID|1||SECRETMRN\n", flow.Accepted, "AA", 1},
		{"enhanced mode", "MSH|^~\\&|LAB|W|EHR|H|20261122||ADT^A01|C2|P|2.5.1|||AL|NE\rPID|1\r", flow.Accepted, "CA", 2},
		{"rubbish bin", "MSH|^~\\&|LAB|W|EHR|H|20261122||ORU^R01|C3|T|2.5.1\r", flow.Accepted, "AA", 2},
		{"undeliverable", "MSH|^~\\&|LAB|W|EHR|H|20261122||ORM^O01|C4|P|2.5.1\r", flow.Accepted, "AA", 2},
		{"malformed", "MSH|^~\\&|LAB|W|EHR|H|20261122||ORU^R01||P|2.5.1\rPID|1||SECRETMRN\r", flow.Rejected, "AR", 2},
		{"not HL7", "hello SECRETMRN", flow.Rejected, "AR", 2},
	}
	for _, c := range cases {
		o := in.Accept(ctx, flow.Inbound{Source: "mon", Raw: []byte(c.raw)})
		code, _, text := ack(t, o)
		if o.Code != c.code || code != c.msa {
			t.Errorf("%s: outcome %s, MSA-1 %s; want %s, %s (reason %q)", c.name, o.Code, code, c.code, c.msa, o.Reason)
		}
		if c.code == flow.Rejected && (text == "" || strings.Contains(text, "SECRETMRN") || strings.Contains(o.Reason, "SECRETMRN")) {
			t.Errorf("%s: reason %q must explain and never quote the message", c.name, text)
		}
		if q := sp.Stats().Destinations["ehr"].Queued; q != c.queued {
			t.Errorf("%s: queued %d, want %d", c.name, q, c.queued)
		}
	}
	// The LF-separated message was stored with CR separators.
	ms, _ := sp.Next("ehr", 0, 1)
	if string(ms[0].Raw) != "MSH|^~\\&|LAB|W|EHR|H|20261122||ORU^R01|C1|P|2.5.1\rPID|1||SECRETMRN\r" {
		t.Errorf("stored %q", ms[0].Raw)
	}
	snap := reg.Snapshot()
	c, _ := snap.Component(health.Source, "mon")
	if c.Counters["received"] != 6 || c.Counters["rejected"] != 2 || c.Counters["rubbish"] != 1 || c.Counters["undeliverable"] != 1 || c.Counters["accepted"] != 2 {
		t.Errorf("counters %v", c.Counters)
	}
}

func TestFullSpoolAnswersAEAndRaisesAlarm(t *testing.T) {
	in, _, _, alarms := newIntake(t)
	big := "MSH|^~\\&|LAB|W|EHR|H|20261122||ORU^R01|BIG|P|2.5.1\rOBX|1|ED|PDF||" + strings.Repeat("A", 200<<10) + "\r"
	var o flow.Outcome
	for range 200 {
		o = in.Accept(context.Background(), flow.Inbound{Source: "mon", Raw: []byte(big)})
		if o.Code != flow.Accepted {
			break
		}
	}
	code, acked, text := ack(t, o)
	if o.Code != flow.RetryLater || code != "AE" || acked != "BIG" || !strings.Contains(text, "max_bytes") {
		t.Fatalf("full spool answered %s %s %q", code, acked, text)
	}
	for range 3 { // refusals after the first raise no further alarm
		in.Accept(context.Background(), flow.Inbound{Source: "mon", Raw: []byte(big)})
	}
	if len(*alarms) != 1 || (*alarms)[0] != "spool_full" {
		t.Fatalf("alarms %v, want one spool_full", *alarms)
	}
}

// scriptedSpool answers Append from a script, so a test can put intake
// through exactly the sequence of full and not-quite-free answers that
// senders retrying at the limit produce.
type scriptedSpool struct {
	answers []error // nil: stored; errNoHeadroom: stored above the low-water mark
	n       int
}

var errNoHeadroom = errors.New("stored, no headroom")

func (s *scriptedSpool) Append(context.Context, storage.Entry) (storage.Result, error) {
	a := s.answers[s.n]
	s.n++
	switch {
	case a == nil:
		return storage.Result{GUID: "g", Headroom: true}, nil
	case errors.Is(a, errNoHeadroom):
		return storage.Result{GUID: "g"}, nil
	}
	return storage.Result{}, a
}

func TestSpoolAlarmsDoNotFlapAtTheLimit(t *testing.T) {
	full := fmt.Errorf("%w: test", storage.ErrFull)
	sp := &scriptedSpool{answers: []error{nil, full, errNoHeadroom, full, errNoHeadroom, errNoHeadroom, full, nil, nil, full}}
	r := route.New([]route.Destination{{Name: "ehr"}})
	var alarms []string
	in := New(sp, r, Options{Alarm: func(kind, _ string) { alarms = append(alarms, kind) }})
	var codes []string
	for i := range sp.answers {
		o := in.Accept(context.Background(), flow.Inbound{Source: "mon", Raw: fmt.Appendf(nil, "MSH|^~\\&|LAB|W|EHR|H|20261122||ORU^R01|C%d|P|2.5.1\rPID|1\r", i)})
		codes = append(codes, string(o.Code))
	}
	if want := "AA AE AA AE AA AA AE AA AA AE"; strings.Join(codes, " ") != want {
		t.Errorf("answers %v, want %s", codes, want)
	}
	if want := "spool_full spool_ok spool_full"; strings.Join(alarms, " ") != want {
		t.Errorf("alarms %v, want %s: one pair per episode, ended only by a write with headroom", alarms, want)
	}
}

// A message the spool can never store is answered AR, not AE: a sender
// told AE would send it again for ever. No storage alarm either: the card
// is fine.
func TestAMessageTooLargeForTheSpoolIsRejected(t *testing.T) {
	tooLarge := fmt.Errorf("%w: test", storage.ErrTooLarge)
	sp := &scriptedSpool{answers: []error{tooLarge, nil}}
	r := route.New([]route.Destination{{Name: "ehr"}})
	var alarms []string
	in := New(sp, r, Options{Alarm: func(kind, _ string) { alarms = append(alarms, kind) }})
	var codes []string
	for i := range sp.answers {
		o := in.Accept(context.Background(), flow.Inbound{Source: "mon", Raw: fmt.Appendf(nil, "MSH|^~\\&|LAB|W|EHR|H|20261122||ORU^R01|C%d|P|2.5.1\rPID|1\r", i)})
		codes = append(codes, string(o.Code))
	}
	if want := "AR AA"; strings.Join(codes, " ") != want {
		t.Errorf("answers %v, want %s", codes, want)
	}
	if len(alarms) != 0 {
		t.Errorf("alarms %v for a message too large, want none", alarms)
	}
}
