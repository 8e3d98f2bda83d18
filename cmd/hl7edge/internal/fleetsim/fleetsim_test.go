package fleetsim

import (
	"encoding/json"
	"testing"

	"github.com/hl7edge/hl7edge/device/frontpanel"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestGatewaysBornFaultedAndGone: each simulated gateway publishes its
// birth and a health that shows its fault code; Leave takes one away by a
// clean stop (its own "offline") and one by a cut connection (the broker's
// Last Will).
func TestGatewaysBornFaultedAndGone(t *testing.T) {
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	specs := []Spec{
		{ID: "gw-a", Version: "1.0", Queued: 3},
		{ID: "gw-b", Version: "1.0", Fault: frontpanel.FaultUpstreamRefusing, Offline: Cut},
		{ID: "gw-c", Version: "1.1", Fault: frontpanel.FaultStorage, Alarm: health.AlarmStorageError, Offline: CleanStop},
	}
	f, err := Start(t.Context(), b.URL, t.TempDir(), specs)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	for _, sp := range specs {
		b.Log.WaitFor(t, 0, sp.ID+" birth", mqtttest.JSONHas("hl7edge/"+sp.ID+"/status", map[string]any{"state": "online", "version": sp.Version}))
		_, m := b.Log.WaitFor(t, 0, sp.ID+" health", mqtttest.JSONHas("hl7edge/"+sp.ID+"/health", map[string]any{"device": sp.ID}))
		var s health.Snapshot
		if err := json.Unmarshal(m.Payload, &s); err != nil {
			t.Fatal(err)
		}
		if got := frontpanel.FaultOf(s); got != sp.Fault {
			t.Errorf("%s health shows fault %d, want %d: %+v", sp.ID, got, sp.Fault, s)
		}
		if q := s.Destinations[0].Queued; q != sp.Queued {
			t.Errorf("%s queued %d, want %d", sp.ID, q, sp.Queued)
		}
		if (len(s.Alarms) == 1) != (sp.Alarm != "") {
			t.Errorf("%s alarms %+v, want %q", sp.ID, s.Alarms, sp.Alarm)
		}
	}
	f.Leave()
	_, will := b.Log.WaitFor(t, 0, "gw-b's Last Will", mqtttest.JSONHas("hl7edge/gw-b/status", map[string]any{"state": "offline"}))
	if !will.Will {
		t.Error("gw-b went offline without the broker's Last Will")
	}
	_, off := b.Log.WaitFor(t, 0, "gw-c's offline", mqtttest.JSONHas("hl7edge/gw-c/status", map[string]any{"state": "offline"}))
	if off.Will {
		t.Error("gw-c's clean stop came as a Last Will")
	}
	for _, m := range b.Log.All() {
		if m.Topic == "hl7edge/gw-a/status" && string(m.JSON(t)["state"].(string)) == "offline" {
			t.Error("gw-a, which stays online, went offline")
		}
	}
}
