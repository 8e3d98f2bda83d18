package powercut

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// traceMsg is what the rig reads of one message's trace (`hl7edge trace
// --json`, docs/operations.md).
type traceMsg struct {
	GUID       string    `json:"guid"`
	ControlID  string    `json:"control_id"`
	ReceivedAt time.Time `json:"received_at"`
	Route      string    `json:"route"`
	Events     []struct {
		At      time.Time `json:"at"`
		What    string    `json:"what"`
		Dest    string    `json:"dest"`
		Outcome string    `json:"outcome,omitempty"`
	} `json:"events"`
}

// readTraces reads every trace the gateway holds through the real binary
// (guestinit's "trace"), a page of at most 1,000 at a time in receive
// order; each page starts at the millisecond of the last one's last
// message (within a millisecond the order is the GUIDs', not the receive
// times'), and messages seen twice at that boundary are counted once.
func (r *rig) readTraces() ([]traceMsg, error) {
	seen := map[string]traceMsg{}
	since := "2000-01-01T00:00:00Z"
	for {
		line, err := r.control("trace " + since)
		if err != nil {
			return nil, err
		}
		var page struct {
			Messages []traceMsg `json:"messages"`
			More     bool       `json:"more"`
			Error    string     `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &page); err != nil || page.Error != "" {
			return nil, fmt.Errorf("trace since %s: %s", since, line[:min(300, len(line))])
		}
		before := len(seen)
		for _, m := range page.Messages {
			seen[m.GUID] = m
		}
		if !page.More {
			break
		}
		if len(seen) == before {
			return nil, fmt.Errorf("trace since %s: a full page of messages received at one instant; the rig cannot page past it", since)
		}
		since = page.Messages[len(page.Messages)-1].ReceivedAt.Truncate(time.Millisecond).Format(time.RFC3339Nano)
	}
	return slices.Collect(maps.Values(seen)), nil
}

// traceWant is what the traces must show: every control ID in acked has a
// trace with "received" (and not refused), and each ID that destination d's
// receiver holds (held[d]) and that is in acked has, in a trace of that ID,
// the event done[d] ("delivered", or "dead" for a destination whose
// receiver refuses everything) for d.
type traceWant struct {
	acked []string
	held  map[string]map[string]bool
	done  map[string]string
}

// traceFindings are what checkTraces found: control IDs by what their
// traces lack, and how many (ID, destination) pairs show the event more
// than once (a delivery mark that was committed and yet delivered again).
type traceFindings struct {
	missing map[string][]string
	twice   int
}

// checkTraces compares the traces with what the rig knows. The rule per
// destination: at least one "delivered" where the receiver has the
// message. A message delivered whose mark a cut then took is delivered
// again, and its first "delivered" went with the mark (same commit): the
// trace shows the delivery that counted, once. More than once is counted,
// not failed: the ledger's check judges deliveries.
func checkTraces(w traceWant, traces []traceMsg) traceFindings {
	byID := map[string][]traceMsg{}
	for _, m := range traces {
		byID[m.ControlID] = append(byID[m.ControlID], m)
	}
	f := traceFindings{missing: map[string][]string{}}
	for _, id := range w.acked {
		received := false
		events := map[string]int{}
		for _, m := range byID[id] {
			for _, e := range m.Events {
				if e.What == "received" && m.Route != "refused" {
					received = true
				}
				events[e.What+" "+e.Dest]++
			}
		}
		if !received {
			f.missing["with no trace of being received"] = append(f.missing["with no trace of being received"], id)
		}
		for _, d := range slices.Sorted(maps.Keys(w.held)) {
			if !w.held[d][id] {
				continue
			}
			ev := w.done[d] + " " + d
			switch n := events[ev]; {
			case n == 0:
				f.missing["with no "+ev+" in their trace"] = append(f.missing["with no "+ev+" in their trace"], id)
			case n > 1:
				f.twice++
			}
		}
	}
	return f
}

// lines are the findings as the rig reports them, one line per kind.
func (f traceFindings) lines() []string {
	var out []string
	for _, what := range slices.Sorted(maps.Keys(f.missing)) {
		ids := slices.Sorted(slices.Values(f.missing[what]))
		out = append(out, fmt.Sprintf("%d control IDs %s, first: %v", len(ids), what, ids[:min(10, len(ids))]))
	}
	return out
}

// checkTraceLedger checks the traces beside the ledger (issue 25): the
// ACKed and pulled control IDs against what each destination holds at the
// end.
func (r *rig) checkTraceLedger(files, posted, lanes, dead map[string][]string, traces []traceMsg, readErr error) {
	if readErr != nil {
		r.fig.TraceReadError = readErr.Error()
		r.t.Errorf("traces: %v", readErr)
		return
	}
	r.ledger.mu.Lock()
	acked := slices.Clone(r.ledger.ids['A'])
	r.ledger.mu.Unlock()
	for i := 1; i <= r.mailN; i++ {
		acked = append(acked, fmt.Sprintf("P%06d", i))
	}
	has := func(m map[string][]string) map[string]bool {
		out := map[string]bool{}
		for id, g := range m {
			out[id] = len(g) > 0
		}
		return out
	}
	accepted := map[string]bool{}
	for _, a := range r.reports.arrivals() {
		accepted[a.ID] = accepted[a.ID] || a.Code == "AA"
	}
	w := traceWant{
		acked: acked,
		held:  map[string]map[string]bool{"archive": has(files), "ehr": has(posted), "ehr-lanes": has(lanes), "reports": accepted, "rejects": has(dead)},
		done:  map[string]string{"archive": "delivered", "ehr": "delivered", "ehr-lanes": "delivered", "reports": "delivered", "rejects": "dead"},
	}
	f := checkTraces(w, traces)
	r.fig.Traces, r.fig.TraceTwice = len(traces), f.twice
	for _, ids := range f.missing {
		r.fig.TraceMissing += len(ids)
	}
	for _, l := range f.lines() {
		r.t.Error(l)
	}
	if f.twice > 0 {
		r.t.Logf("%d (control ID, destination) pairs with their event more than once in their trace", f.twice)
	}
}
