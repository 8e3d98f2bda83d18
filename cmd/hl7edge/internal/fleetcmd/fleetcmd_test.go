package fleetcmd

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetsim"
	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetview"
	"github.com/hl7edge/hl7edge/device/mqttagent"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/device/trust/minisigntest"
)

// TestSignedPerBox: with a key, each box gets an envelope made for it
// alone, which a box holding the public key obeys and a box without
// trust.keys refuses with its reason; every answer is matched to its box
// by the command id.
func TestSignedPerBox(t *testing.T) {
	key := minisigntest.NewKey(t)
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	f, err := fleetsim.Start(t.Context(), b.URL, t.TempDir(), []fleetsim.Spec{
		{ID: "gw-a", Version: "1.0", TrustKeys: []string{key.Pub}},
		{ID: "gw-b", Version: "1.0", TrustKeys: []string{key.Pub}},
		{ID: "gw-c", Version: "1.0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	for _, id := range []string{"gw-a", "gw-b", "gw-c"} {
		b.Log.WaitFor(t, 0, id+" birth", mqtttest.JSONHas("hl7edge/"+id+"/status", map[string]any{"state": "online"}))
	}
	r, err := fleetview.Open(t.Context(), fleetview.Options{MQTT: mqttagent.Config{Broker: b.URL}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	l, err := Open(t.Context(), r.Client(), "hl7edge")
	if err != nil {
		t.Fatal(err)
	}
	s, err := trust.LoadSigner(key.SecFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	res := l.Run(t.Context(), Plan{Name: "reping", Args: json.RawMessage(`{"name":"ehr"}`), Sign: MinisignSigner(s), Timeout: 30 * time.Second},
		[]string{"gw-a", "gw-b", "gw-c"}, []string{"gw-gone"})
	want := []Outcome{Answered, Answered, Refused, Skipped}
	for i, x := range res {
		if x.Outcome != want[i] {
			t.Errorf("%s: %s (%s), want %s", x.Device, x.Outcome, x.Detail, want[i])
		}
	}
	if !strings.Contains(res[2].Detail, "no trust.keys") {
		t.Errorf("gw-c refused with %q; want its reason (no trust.keys)", res[2].Detail)
	}
	if got := Summary(res); got != "2 answered, 1 refused, 1 skipped" {
		t.Errorf("summary %q", got)
	}
	for _, m := range b.Log.All() {
		if m.Topic == "hl7edge/gw-a/cmd/req" && !trust.IsEnvelope(m.Payload) {
			t.Errorf("gw-a got an unsigned command: %s", m.Payload)
		}
	}
}
