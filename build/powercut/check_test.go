package powercut

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

// deadLetters lists dest's dead letters over the control port: control
// ID → GUIDs. A list that cannot be read is a failure of its own (an
// unreadable dead letter makes the whole list fail).
func (r *rig) deadLetters(dest string) map[string][]string {
	out := map[string][]string{}
	line, err := r.control("dead " + dest)
	if err != nil {
		r.fig.DeadListError = err.Error()
		r.t.Errorf("dead letters of %s: %v", dest, err)
		return out
	}
	var list []struct {
		GUID      string `json:"guid"`
		ControlID string `json:"control_id"`
	}
	if err := json.Unmarshal([]byte(line), &list); err != nil {
		r.fig.DeadListError = line
		r.t.Errorf("dead letters of %s: %s", dest, line)
		return out
	}
	for _, d := range list {
		out[d.ControlID] = append(out[d.ControlID], d.GUID)
		if d.ControlID == "" {
			r.fig.DeadUnreadable++ // listed, its record unreadable: no control ID
		}
	}
	r.fig.DeadListed = len(list)
	return out
}

// checkDelivered compares every destination with the ledger: each ACKed
// (and each pulled) control ID is at every destination it was routed to,
// or, where the receiver refused it, among the dead letters; none under two
// GUIDs.
func (r *rig) checkDelivered(files, posted, lanes, dead map[string][]string) (lost map[string][]string) {
	t := r.t
	r.ledger.mu.Lock()
	acked := slices.Clone(r.ledger.ids['A'])
	refusedIDs := slices.Clone(r.ledger.ids['N'])
	r.fig.Acked, r.fig.NoVerdict, r.fig.Refused = len(acked), len(r.ledger.ids['U']), len(r.ledger.ids['N'])
	r.fig.LargeAcked, r.fig.LargeBytes = r.ledger.large, r.ledger.largeB
	r.ledger.mu.Unlock()
	accepted := map[string]bool{}
	for _, a := range r.reports.arrivals() {
		if a.Code == "AA" {
			accepted[a.ID] = true
		}
	}
	var pulled []string
	for i := 1; i <= r.mailN; i++ {
		pulled = append(pulled, fmt.Sprintf("P%06d", i))
	}
	r.fig.Pulled = len(pulled)
	lost = map[string][]string{}
	for _, id := range append(acked, pulled...) {
		rt, where := routes(id), "lost in "
		if id[0] == 'P' {
			where = "pulled but lost in "
		}
		miss := func(to int, dest string, there bool) {
			if rt&to != 0 && !there {
				lost[where+dest] = append(lost[where+dest], id)
			}
		}
		miss(toArchive, "the file destination", len(files[id]) > 0)
		miss(toEHR, "the web service", len(posted[id]) > 0)
		miss(toLanes, "the web service with lanes", len(lanes[id]) > 0)
		miss(toReports, "the reports receiver", accepted[id])
		if r.fig.DeadListError == "" { // else already failed, and nothing to compare with
			miss(toRejects, "the dead letters of rejects", len(dead[id]) > 0)
		}
	}
	r.fig.LostFile = len(lost["lost in the file destination"])
	r.fig.LostWS = len(lost["lost in the web service"])
	r.fig.LostLanes = len(lost["lost in the web service with lanes"])
	r.fig.LostReports = len(lost["lost in the reports receiver"])
	r.fig.LostDead = len(lost["lost in the dead letters of rejects"])
	for k, l := range lost {
		if strings.HasPrefix(k, "pulled") {
			r.fig.LostPull += len(l)
		}
	}
	// A message answered AE was not stored, as far as its sender knows: a
	// real sender sends it again, and a copy delivered anyway becomes a
	// second GUID at the receiver. Counted, not failed (the rig does not
	// resend).
	for _, id := range refusedIDs {
		if len(files[id])+len(posted[id])+len(lanes[id])+len(dead[id]) > 0 || accepted[id] {
			r.fig.RefusedDelivered++
		}
	}
	var two []string
	for id := range files {
		all := slices.Concat(files[id], posted[id], lanes[id], dead[id])
		slices.Sort(all)
		if len(slices.Compact(all)) > 1 {
			two = append(two, id)
		}
	}
	r.fig.TwoGUIDs = len(two)
	if b, err := os.ReadFile(filepath.Join(r.store, refserver.ReceivedLog)); err == nil {
		r.fig.Redelivered = bytes.Count(b, []byte("\n")) - len(posted)
	}
	lost["under two GUIDs"] = two
	for name, l := range lost {
		if len(l) > 0 {
			slices.Sort(l)
			t.Errorf("%d control IDs %s, first: %v", len(l), name, l[:min(10, len(l))])
		}
	}
	return lost
}

// explainLost logs what the gateway's own traces say of the first lost
// control IDs: a loss is rare, and the rig's directory is gone once the
// run ends, so the trace is the evidence the run leaves behind.
func (r *rig) explainLost(lost map[string][]string, traces []traceMsg) {
	byID := map[string][]traceMsg{}
	for _, m := range traces {
		byID[m.ControlID] = append(byID[m.ControlID], m)
	}
	for name, ids := range lost {
		for _, id := range ids[:min(5, len(ids))] {
			b, _ := json.Marshal(byID[id])
			r.t.Logf("%s %s: its traces: %s", name, id, b)
		}
	}
}

// checkOrders checks each destination's order where it is known: the
// one-lane web service and the two MLLP receivers per sender connection, the
// web service with lanes per patient. The file destination's order is not
// checked: its only evidence is file times, and a message written again
// after a cut (same GUID, same file) gets a new one.
func (r *rig) checkOrders() {
	r.mu.Lock()
	boots := slices.Clone(r.boots)
	r.mu.Unlock()
	fromLog := func(store string) []arrival {
		recs, err := refserver.ReadReceived(store)
		if err != nil {
			r.t.Errorf("%s: %v", store, err)
		}
		var out []arrival
		for _, rec := range recs {
			out = append(out, arrival{ID: rec.ControlID, At: rec.Time})
		}
		return out
	}
	var bad, late []string
	for _, c := range []struct {
		dest string
		arr  []arrival
		key  orderKey
	}{
		{"ehr", fromLog(r.store), byConnection},
		{"ehr-lanes", fromLog(r.store2), byPatient},
		{"reports", r.reports.arrivals(), byConnection},
		{"rejects", r.rejects.arrivals(), byConnection},
	} {
		b, l := checkOrder(c.arr, boots, c.key)
		for _, v := range b {
			bad = append(bad, c.dest+": "+v)
		}
		for _, v := range l {
			late = append(late, c.dest+": "+v)
		}
	}
	r.fig.OrderBroken = bad[:min(20, len(bad))]
	r.fig.LateCopies = len(late)
	if len(late) > 0 {
		r.t.Logf("%d second copies after a later message (accepted, docs/power-loss.md), first: %v", len(late), late[:min(5, len(late))])
	}
	if len(bad) > 0 {
		r.t.Errorf("%d order violations, first: %v", len(bad), bad[:min(10, len(bad))])
	}
}
