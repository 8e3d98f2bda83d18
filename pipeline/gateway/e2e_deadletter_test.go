package gateway_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

// TestE2EMaxAttemptsDeadLetter: with max_attempts 3 and a service that
// answers every request with an EXCEPTION, a message is tried exactly three
// times and moved to the dead letters (with an alarm); the next message is
// then delivered; RetryDead puts the dead one back with its GUID and it is
// delivered once the service is fixed.
func TestE2EMaxAttemptsDeadLetter(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ws := r.startWebService("ehr", wsOptions{Faults: refserver.Faults{ExceptionEvery: 1}})
	g := r.startWSGateway(ws, "    max_attempts: 3")
	c := g.Dial(t)
	m1, m2 := oru("DEAD-1"), oru("NEXT-2")
	if err := sendAll(c, [][]byte{m1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the message in the dead letters", func() bool { return g.Queue("ehr").Dead == 1 })
	dls, err := g.GW.Spool().DeadLetters("ehr")
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	dl := dls[0]
	if controlID(dl.Raw) != "DEAD-1" || string(dl.Raw) != string(m1) {
		t.Errorf("the dead letter is %q, want DEAD-1 unchanged", controlID(dl.Raw))
	}
	if dl.Attempts != 3 || !strings.Contains(dl.Reason, "max_attempts") {
		t.Errorf("dead letter: %d attempts, reason %q; want 3 and a reason naming max_attempts", dl.Attempts, dl.Reason)
	}
	if st := ws.Ref.Stats(); st.Requests != 3 {
		t.Errorf("the service saw %d requests for a message allowed 3 attempts", st.Requests)
	}
	if q := g.Queue("ehr"); q.Queued != 0 || q.Delivered != 0 {
		t.Errorf("ehr: %d queued, %d delivered; want 0 and 0", q.Queued, q.Delivered)
	}
	alarms := g.Alarms.All()
	if len(alarms) != 1 || alarms[0].Kind != "dead_letter" || !strings.Contains(alarms[0].Detail, dl.GUID) {
		t.Errorf("alarms %v: want one dead_letter alarm naming %s", alarms, dl.GUID)
	}

	ws.Ref.SetFaults(refserver.Faults{})
	if err := sendAll(c, [][]byte{m2}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the next message delivered", func() bool { return g.Queue("ehr").Delivered == 1 })
	if _, ok := ws.StoredFiles()[dl.GUID]; ok {
		t.Fatalf("the dead letter %s reached the service without a retry", dl.GUID)
	}

	n, err := g.GW.RetryDead("ehr")
	if err != nil || n != 1 {
		t.Fatalf("RetryDead: %d, %v; want 1, nil", n, err)
	}
	guids, dups := checkDelivered(t, g, ws, [][]byte{m2, m1}, 20*time.Second)
	if guids["DEAD-1"] != dl.GUID {
		t.Errorf("the retried message arrived as %s, want its original GUID %s", guids["DEAD-1"], dl.GUID)
	}
	if dups != 0 {
		t.Errorf("%d duplicate posts", dups)
	}
	if q := g.Queue("ehr"); q.Dead != 0 {
		t.Errorf("%d dead letters left after a successful retry", q.Dead)
	}
	if dls, _ := g.GW.Spool().DeadLetters("ehr"); len(dls) != 0 {
		t.Errorf("DeadLetters still lists %d", len(dls))
	}
	if n, err := g.GW.RetryDead("nope"); err == nil {
		t.Errorf("RetryDead of an unknown destination: %d, nil; want an error", n)
	}
}
