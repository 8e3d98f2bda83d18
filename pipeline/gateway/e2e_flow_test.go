package gateway_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

// TestE2EThousandMessagesFourConnections sends 1,000 messages over four
// concurrent MLLP connections and follows them to the reference web service
// over HTTPS: every one answered AA, stored exactly once under one GUID,
// byte-identical after Base64, in per-connection order, with the MSH
// attributes of the post taken from the message's own MSH.
func TestE2EThousandMessagesFourConnections(t *testing.T) {
	const conns, perConn = 4, 250
	r := newRig(t)
	ws := r.startWebService("ehr", wsOptions{})
	g := r.startWSGateway(ws, "")

	// Vary what the attributes are read from, so that a mix-up of fields
	// shows: sender and facility per connection, type, processing ID and
	// version per message.
	types := [][2]string{{"ORU", "R01"}, {"ADT", "A08"}, {"ORM", "O01"}}
	versions := []string{"2.5.1", "2.3", "2.7"}
	procs := []string{"P", "D"}
	specs := map[string]msgSpec{}
	perConnMsgs := make([][][]byte, conns)
	var all [][]byte
	for c := range conns {
		for n := range perConn {
			ty := types[n%len(types)]
			s := msgSpec{
				SA: fmt.Sprintf("LAB%d", c), SF: fmt.Sprintf("WARD%d", c), RA: "EHR", RF: fmt.Sprintf("HOSP%d", n%2),
				Type: ty[0], Event: ty[1], Control: fmt.Sprintf("C%d-%d", c, n),
				Proc: procs[n%len(procs)], Version: versions[n%len(versions)],
			}
			specs[s.Control] = s
			m := s.build()
			perConnMsgs[c] = append(perConnMsgs[c], m)
			all = append(all, m)
		}
	}

	var wg sync.WaitGroup
	errs := make([]error, conns)
	start := time.Now()
	for c := range conns {
		cl := g.Dial(t)
		wg.Go(func() { errs[c] = sendAll(cl, perConnMsgs[c]) })
	}
	wg.Wait()
	acked := time.Since(start)
	for c, err := range errs {
		if err != nil {
			t.Fatalf("connection %d: %v", c, err)
		}
	}

	// checkDelivered compares the global order with "all", which is not the
	// order of four concurrent senders; check the order per connection here.
	total := conns * perConn
	waitFor(t, 90*time.Second, "1000 messages delivered", func() bool {
		q := g.Queue("ehr")
		return q.Queued == 0 && q.Delivered >= uint64(total)
	})
	delivered := time.Since(start)
	t.Logf("%d messages: all AA after %s, all delivered after %s (%.0f msgs/s end to end, %d TLS connection(s) to the service)",
		total, acked.Round(time.Millisecond), delivered.Round(time.Millisecond), float64(total)/delivered.Seconds(), ws.Conns.Load())

	files := ws.StoredFiles()
	if len(files) != total {
		t.Fatalf("the store holds %d <GUID>.hl7 files, want %d", len(files), total)
	}
	byCtl := map[string][]byte{}
	for _, m := range all {
		byCtl[controlID(m)] = m
	}
	guidOf := map[string]string{}
	for guid, data := range files {
		ctl := controlID(data)
		if want, ok := byCtl[ctl]; !ok || string(want) != string(data) {
			t.Errorf("stored %s (control ID %q) is not byte-identical to any message sent", guid, ctl)
		}
		if prev, dup := guidOf[ctl]; dup {
			t.Errorf("control ID %s stored twice, as %s and %s", ctl, prev, guid)
		}
		guidOf[ctl] = guid
	}

	lines := ws.Received()
	if len(lines) != total {
		t.Errorf("received.log has %d lines, want %d (one post per message: nothing failed, so nothing is retried)", len(lines), total)
	}
	seen := map[string]bool{}
	last := make([]int, conns)
	for i := range last {
		last[i] = -1
	}
	for _, rec := range lines {
		if rec.Duplicate || seen[rec.GUID] {
			t.Errorf("received.log: GUID %s posted more than once", rec.GUID)
		}
		seen[rec.GUID] = true
		if guidOf[rec.ControlID] != rec.GUID {
			t.Errorf("received.log: control ID %s arrived as GUID %s, the store has it as %s", rec.ControlID, rec.GUID, guidOf[rec.ControlID])
		}
		c, n := parseControl(t, rec.ControlID)
		if n <= last[c] {
			t.Errorf("connection %d: %s arrived after C%d-%d: per-connection order broken", c, rec.ControlID, c, last[c])
		}
		last[c] = n
	}

	for ctl, guid := range guidOf {
		got, ok := ws.Rec.Attrs(guid)
		if !ok {
			t.Errorf("no post recorded for GUID %s", guid)
			continue
		}
		s := specs[ctl]
		want := wire.MSH{
			SendingApp: s.SA, SendingFacility: s.SF, ReceivingApp: s.RA, ReceivingFacility: s.RF,
			MessageType: s.Type, TriggerEvent: s.Event, ControlID: s.Control, ProcessingID: s.Proc, Version: s.Version,
		}
		if got != want {
			t.Errorf("post of %s (%s) carried attributes\n got %+v\nwant %+v", guid, ctl, got, want)
		}
	}
	ws.Rec.checkConsistent(t, false)
	if posts, exc, s500 := ws.Rec.Count(kindPost); posts != total || exc != 0 || s500 != 0 {
		t.Errorf("the service saw %d posts (%d EXCEPTION, %d HTTP 500), want %d clean posts", posts, exc, s500, total)
	}
	// The health counter "delivered" is checked in TestE2EHealthDeliveredCountedOnce.
	if d := g.Dest("ehr"); d.State != "up" || d.Counters["posts"] != uint64(total) {
		t.Errorf("health of ehr: state %s, posts %d; want up, %d", d.State, d.Counters["posts"], total)
	}
	if q := g.Queue("ehr"); q.Delivered != uint64(total) || q.Queued != 0 {
		t.Errorf("spool: ehr delivered %d, queued %d; want %d, 0", q.Delivered, q.Queued, total)
	}
	if src := g.Source("in"); src.Counters["accepted"] != uint64(total) {
		t.Errorf("health of source in: accepted %d, want %d", src.Counters["accepted"], total)
	}
}

// parseControl splits C<conn>-<n>.
func parseControl(t *testing.T, ctl string) (int, int) {
	t.Helper()
	a, b, ok := strings.Cut(strings.TrimPrefix(ctl, "C"), "-")
	c, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("control ID %q is not C<conn>-<n>", ctl)
	}
	return c, n
}
