package mqttagent

import (
	"encoding/json"
	"testing"

	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestCleanStopPublishesFinalHealth is issue 28's point 7: a box stopped
// cleanly leaves, retained, the health of the moment it stopped (then its
// offline status), not whatever its last periodic snapshot said: counts
// that changed since (they change health without a state change) show.
func TestCleanStopPublishesFinalHealth(t *testing.T) {
	t.Parallel()
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	ob := mqtttest.Subscribe(t, b.URL, "hl7edge/gw1/#", mqtttest.ClientOptions{})
	var src *health.Component
	r := startAgent(t, Config{Broker: b.URL}, agentSetup{
		register: func(r *runner) {
			src = r.reg.Component(health.Source, "lab", "mllp")
			src.SetState(health.Up)
		},
	})
	ob.Log.WaitFor(t, 0, "the first health", func(m mqtttest.Message) bool { return m.Topic == "hl7edge/gw1/health" })
	from := ob.Log.Mark()
	src.Add(health.CounterReceived, 3) // no state change: no health on change
	r.stop(t)
	off, _ := ob.Log.WaitFor(t, from, "offline at clean stop", mqtttest.JSONHas("hl7edge/gw1/status", map[string]any{"state": "offline"}))
	var last *health.Snapshot
	for _, m := range ob.Log.All()[from:off] {
		if m.Topic == "hl7edge/gw1/health" {
			var s health.Snapshot
			if err := json.Unmarshal(m.Payload, &s); err != nil {
				t.Fatal(err)
			}
			last = &s
		}
	}
	if last == nil {
		t.Fatal("no health published between the stop and the offline status")
	}
	if c, _ := last.Component(health.Source, "lab"); c.Counters[health.CounterReceived] != 3 {
		t.Errorf("final health shows lab received %d, want 3", c.Counters[health.CounterReceived])
	}
	// The broker keeps it: a fleet view opened later reads the same.
	late := mqtttest.Subscribe(t, b.URL, "hl7edge/gw1/health", mqtttest.ClientOptions{})
	_, m := late.Log.WaitFor(t, 0, "the retained health", func(m mqtttest.Message) bool { return m.Topic == "hl7edge/gw1/health" })
	var s health.Snapshot
	if err := json.Unmarshal(m.Payload, &s); err != nil || !m.Retained {
		t.Fatalf("retained health: %v, retained %v", err, m.Retained)
	}
	if c, _ := s.Component(health.Source, "lab"); c.Counters[health.CounterReceived] != 3 {
		t.Errorf("retained health after the stop shows lab received %d, want 3", c.Counters[health.CounterReceived])
	}
}
