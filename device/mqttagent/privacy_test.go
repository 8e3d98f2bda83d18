package mqttagent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// An ORU message with made-up patient data. Its control ID (CTRL0001) may be
// published; nothing else of it may.
const phiMessage = "MSH|^~\\&|LAB|WARD3|EHR|HOSP|20240101120000||ORU^R01|CTRL0001|P|2.5\r" +
	"PID|1||MRN778899^^^HOSP^MR||DOE^JANE^Q||19800101|F|||12 ELM ST^^SPRINGFIELD\r" +
	"OBX|1|NM|GLU^Glucose||5.4|mmol/L|||||F\r"

var phiMarkers = []string{"MRN778899", "DOE^JANE", "JANE", "19800101", "ELM ST", "PID|", "Glucose"}

// TestNoPatientDataPublished drives every path that produces a payload —
// birth, health, alarms, good and malformed commands whose bytes carry a
// patient's data, command failures, stop — and scans everything the broker
// received from the agent, and the agent's log, for that data.
func TestNoPatientDataPublished(t *testing.T) {
	t.Parallel()
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	ob := mqtttest.Subscribe(t, b.URL, "hl7edge/gw1/#", mqtttest.ClientOptions{})
	r := startAgent(t, Config{Broker: b.URL, HealthInterval: units.Duration(time.Second)}, agentSetup{
		register: func(r *runner) {
			src := r.reg.Component(health.Source, "monitors", "mllp")
			src.SetState(health.Up)
			src.Add("in", 1)
			src.Fail("", "message CTRL0001 refused with AR: PID-3 missing")
			// A command that takes a message (say, to re-inject it) and
			// answers with its control ID only, as handlers must.
			r.disp.Register("inject", func(_ context.Context, args json.RawMessage) (any, string, error) {
				var a struct{ Message string }
				if err := json.Unmarshal(args, &a); err != nil {
					return nil, "", fmt.Errorf("args: want {\"message\":…}")
				}
				if strings.Contains(a.Message, "ORU") {
					return map[string]string{"control_id": "CTRL0001"}, "queued", nil
				}
				return nil, "", fmt.Errorf("message has no ORU type; nothing queued")
			})
		},
	})
	r.waitState(t, health.Up)

	quoted, _ := json.Marshal(phiMessage)
	big := strings.Repeat(phiMessage, MaxCommandBytes/len(phiMessage)+1)
	bigQuoted, _ := json.Marshal(big)
	cmds := []struct{ id, payload string }{
		{"ok", `{"id":"ok","name":"inject","args":{"message":` + string(quoted) + `}}`},
		{"fail", `{"id":"fail","name":"inject","args":{"message":"PID|1||MRN778899"}}`},
		{"trunc", `{"id":"trunc","name":"inject","args":{"message":` + string(quoted[:60])}, // invalid JSON
		{"types", `{"id":"types","name":"inject","expires":` + string(quoted) + `}`},        // expires not a time
		{"", `{"id":"ctl` + "\\r" + `PID|1||MRN778899","name":"health"}`},                   // id with a control character
		{"badname", `{"id":"badname","name":"DOE^JANE 19800101"}`},                          // name holds data
		{"args", `{"id":"args","name":"inject","args":` + string(quoted) + `}`},             // args not an object
		{"", `{"id":"big","name":"inject","args":{"message":` + string(bigQuoted) + `}}`},   // too large
	}
	for _, c := range cmds {
		ob.Publish(t, "hl7edge/gw1/cmd/req", false, c.payload)
	}
	response(t, ob, 0, "ok", command.Successful)
	response(t, ob, 0, "fail", command.Failed)
	for _, id := range []string{"trunc", "types", "badname", "args"} {
		response(t, ob, 0, id, command.Rejected)
	}
	from := 0
	for range 2 { // the control-character id and big are answered without an id
		i, _ := ob.Log.WaitFor(t, from, "an anonymous rejection", func(m mqtttest.Message) bool {
			var v map[string]any
			return m.Topic == "hl7edge/gw1/cmd/res" && json.Unmarshal(m.Payload, &v) == nil && v["status"] == "rejected" && v["id"] == ""
		})
		from = i + 1
	}
	r.a.Alarm("refused", "message CTRL0001 refused with AR")
	ob.Log.WaitFor(t, 0, "alarm", func(m mqtttest.Message) bool { return m.Topic == "hl7edge/gw1/alarm" })
	ob.Log.WaitFor(t, 0, "health", func(m mqtttest.Message) bool {
		return m.Topic == "hl7edge/gw1/health" && strings.Contains(string(m.Payload), "CTRL0001")
	})
	r.stop(t)

	seen := 0
	for _, m := range b.Log.All() {
		if m.Client != "hl7edge-gw1" {
			continue // the observer's own commands carry the data on purpose
		}
		seen++
		for _, p := range phiMarkers {
			if strings.Contains(string(m.Payload), p) || strings.Contains(m.Topic, p) {
				t.Errorf("agent published %q on %s: %s", p, m.Topic, m.Payload)
			}
		}
	}
	if seen < len(cmds)+4 {
		t.Fatalf("broker recorded only %d publications from the agent", seen)
	}
	logs := r.logs.String()
	for _, p := range phiMarkers {
		if strings.Contains(logs, p) {
			t.Errorf("agent logged %q", p)
		}
	}
}
