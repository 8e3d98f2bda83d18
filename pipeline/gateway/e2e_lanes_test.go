package gateway_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/mllp/mllptest"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

// patientMsgs makes n messages spread round-robin over patients: message i
// belongs to patient i%patients and has control ID <prefix>-<i>. It returns
// the messages in sending order and each one's patient.
func patientMsgs(prefix string, n, patients int) ([][]byte, []string) {
	msgs := make([][]byte, n)
	who := make([]string, n)
	for i := range msgs {
		ctl := fmt.Sprintf("%s-%04d", prefix, i)
		who[i] = fmt.Sprintf("PAT%03d", i%patients)
		msgs[i] = bytes.Replace(oru(ctl), []byte("MRN-"+ctl+"^"), []byte(who[i]+"^"), 1)
	}
	return msgs, who
}

// checkPerPatient waits until all of sent is delivered to ehr and checks the
// service's store: every message stored once under one GUID, byte-identical,
// and each patient's messages first arrived in the order they were sent. It
// returns the number of duplicate posts (same GUID posted again).
func checkPerPatient(tb testing.TB, g *gwRig, ws *wsService, sent [][]byte, who []string, timeout time.Duration) int {
	tb.Helper()
	n := len(sent)
	waitFor(tb, timeout, fmt.Sprintf("%d messages delivered to ehr", n), func() bool {
		q := g.Queue("ehr")
		return q.Queued == 0 && q.Delivered >= uint64(n)
	})
	if q := g.Queue("ehr"); q.Dead != 0 {
		tb.Errorf("ehr has %d dead letters", q.Dead)
	}
	byCtl := map[string]int{}
	for i, m := range sent {
		byCtl[controlID(m)] = i
	}
	files := ws.StoredFiles()
	if len(files) != n {
		tb.Errorf("the service's store holds %d messages, want %d", len(files), n)
	}
	ctlGUID := map[string]string{}
	for guid, data := range files {
		ctl := controlID(data)
		i, ok := byCtl[ctl]
		switch {
		case !ok:
			tb.Errorf("stored %s holds control ID %q, which was never sent", guid, ctl)
		case !bytes.Equal(data, sent[i]):
			tb.Errorf("stored %s (control ID %s) differs from what was sent", guid, ctl)
		}
		if prev, dup := ctlGUID[ctl]; dup {
			tb.Errorf("control ID %s stored under two GUIDs %s and %s", ctl, prev, guid)
		}
		ctlGUID[ctl] = guid
	}
	last := map[string]int{} // patient -> index of its last message seen
	first := map[string]bool{}
	dups := 0
	for _, rec := range ws.Received() {
		if rec.Duplicate {
			dups++
			if !first[rec.GUID] {
				tb.Errorf("received.log marks GUID %s duplicate before its first arrival", rec.GUID)
			}
			continue
		}
		if first[rec.GUID] {
			tb.Errorf("received.log stores GUID %s twice", rec.GUID)
		}
		first[rec.GUID] = true
		i, ok := byCtl[rec.ControlID]
		if !ok {
			continue
		}
		p := who[i]
		if prev, seen := last[p]; seen && prev > i {
			tb.Errorf("patient %s: %s arrived after %s, but was sent before it", p, rec.ControlID, controlID(sent[prev]))
		}
		last[p] = i
	}
	if len(first) != n {
		tb.Errorf("received.log has %d distinct GUIDs, want %d", len(first), n)
	}
	return dups
}

// TestE2ELanesKeepEachPatientsOrder: a backlog of 800 messages over 40
// patients drains over 8 lanes, with and without the service failing every
// 7th request with an EXCEPTION and every 11th with HTTP 500: every patient's
// messages arrive in the order they were sent, each stored once.
func TestE2ELanesKeepEachPatientsOrder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		faults refserver.Faults
	}{
		{"clean", refserver.Faults{}},
		{"faults", refserver.Faults{ExceptionEvery: 7, Status500Every: 11}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			ws := r.startWebService("ehr", wsOptions{Faults: tc.faults})
			g := r.startWSGateway(ws, "    lanes: 8\n")
			if err := g.GW.Pause("ehr"); err != nil {
				t.Fatal(err)
			}
			msgs, who := patientMsgs("L", 800, 40)
			if err := sendAll(g.Dial(t), msgs); err != nil {
				t.Fatal(err)
			}
			if err := g.GW.Resume("ehr"); err != nil {
				t.Fatal(err)
			}
			sawBusy := 0
			waitFor(t, 2*time.Minute, "the backlog to drain", func() bool {
				if l := g.Dest("ehr").Lanes; l != nil {
					sawBusy = max(sawBusy, l.Busy)
				}
				return g.Queue("ehr").Queued == 0
			})
			dups := checkPerPatient(t, g, ws, msgs, who, 30*time.Second)
			d := g.Dest("ehr")
			if d.Lanes == nil || d.Lanes.Lanes != 8 {
				t.Errorf("ehr's health shows lanes %+v, want 8 lanes", d.Lanes)
			}
			if sawBusy < 2 {
				t.Errorf("at most %d lanes were seen busy at once; lanes do not run side by side", sawBusy)
			}
			st := ws.Ref.Stats()
			t.Logf("%s: 800 messages over 40 patients, 8 lanes: %d posts, %d pings, %d faults, %d duplicate posts, %d connections, most lanes busy at once %d",
				tc.name, st.Posts, st.Pings, st.Faults, dups, ws.Conns.Load(), sawBusy)
			if tc.faults.ExceptionEvery > 0 && st.Faults == 0 {
				t.Error("no fault was injected")
			}
		})
	}
}

const mllpLanesYAML = `
spool:
  dir: {{DIR}}/spool
sources:
  - name: in
    type: mllp
    listen: {{MLLP}}
destinations:
  - name: lis
    type: mllp
    address: {{RCV}}
    connections: 4
    lanes: 4
`

// TestE2EMLLPLanesKeepEachPatientsOrder: an MLLP destination whose receiver
// takes 4 connections delivers a backlog of 400 messages over 20 patients
// through 4 lanes; the receiver gets each message once, byte-identical, and
// each patient's in sending order.
func TestE2EMLLPLanesKeepEachPatientsOrder(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	rcv := mllptest.Start(t)
	g := r.startGateway(mllpLanesYAML, map[string]string{"RCV": rcv.Addr})
	if err := g.GW.Pause("lis"); err != nil {
		t.Fatal(err)
	}
	msgs, who := patientMsgs("M", 400, 20)
	if err := sendAll(g.Dial(t), msgs); err != nil {
		t.Fatal(err)
	}
	if err := g.GW.Resume("lis"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "400 messages at the receiver", func() bool { return rcv.Len() >= 400 && g.Queue("lis").Queued == 0 })
	index := map[string]int{}
	for i, m := range msgs {
		index[controlID(m)] = i
	}
	got := rcv.Got()
	if len(got) != len(msgs) {
		t.Errorf("the receiver got %d messages, want %d", len(got), len(msgs))
	}
	seen := map[int]bool{}
	last := map[string]int{}
	for _, m := range got {
		i, ok := index[controlID(m)]
		if !ok || !bytes.Equal(m, msgs[i]) {
			t.Fatalf("the receiver got %s, which was not sent like that", controlID(m))
		}
		if seen[i] {
			t.Errorf("%s arrived twice", controlID(m))
		}
		seen[i] = true
		if prev, ok := last[who[i]]; ok && prev > i {
			t.Errorf("patient %s: %s arrived after %s, but was sent before it", who[i], controlID(m), controlID(msgs[prev]))
		}
		last[who[i]] = i
	}
	if l := g.Dest("lis").Lanes; l == nil || l.Lanes != 4 {
		t.Errorf("lis's health shows lanes %+v, want 4", l)
	}
}
