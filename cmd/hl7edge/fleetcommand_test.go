package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/build/golden"
	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetcmd"
	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetsim"
	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetview"
	"github.com/hl7edge/hl7edge/device/mqttagent"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
)

// startFleet runs specs on a broker and waits, through a fleet reader,
// until every one is online with health; then it takes away those whose
// Spec says so and waits for that too.
func startFleet(t *testing.T, url string, specs []fleetsim.Spec) *fleetsim.Fleet {
	t.Helper()
	f, err := fleetsim.Start(t.Context(), url, t.TempDir(), specs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	obs, err := fleetview.Open(t.Context(), fleetview.Options{MQTT: mqttagent.Config{Broker: url}})
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	until := func(what string, ok func(online, withHealth int) bool) {
		for deadline := time.Now().Add(2 * time.Minute); ; {
			on, h := 0, 0
			for _, r := range obs.View.Rows() {
				if r.Online {
					on++
				}
				if !r.HealthTime.IsZero() {
					h++
				}
			}
			if ok(on, h) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 2 minutes (%d online, %d with health)", what, on, h)
			}
			select {
			case <-obs.View.Changed():
			case <-time.After(time.Second):
			}
		}
	}
	until("every gateway online with health", func(on, h int) bool { return on == len(specs) && h == len(specs) })
	staying := 0
	for _, sp := range specs {
		if sp.Offline == fleetsim.StayOnline {
			staying++
		}
	}
	f.Leave()
	until("the leaving ones offline", func(on, _ int) bool { return on == staying })
	return f
}

// TestFleetCommandRows is issue 29's point 2: `fleet command` sends to every
// selected online box and prints one row each: answered, refused with the
// box's reason, no answer within the timeout, and offline boxes skipped;
// unselected boxes get nothing.
func TestFleetCommandRows(t *testing.T) {
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	north := map[string]string{"site": "north"}
	startFleet(t, b.URL, []fleetsim.Spec{
		{ID: "north-1", Version: "1.0", Labels: north},
		{ID: "north-2", Version: "1.0", Labels: north},
		{ID: "north-3", Version: "1.0", Labels: north, Answer: fleetsim.AnswerNone},
		{ID: "north-4", Version: "1.0", Labels: north, Answer: fleetsim.AnswerHang},
		{ID: "north-5", Version: "1.0", Labels: north, Offline: fleetsim.CleanStop},
		{ID: "south-1", Version: "1.0", Labels: map[string]string{"site": "south"}},
	})
	cmd := exec.Command(binPath, "fleet", "command", "reping", `{"name":"ehr"}`, "--broker", b.URL, "--select", "site=north", "--timeout", "3s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("fleet command with a refusal and a silent box: %v (want exit 1)\n%s%s", err, out, stderr.String())
	}
	golden.Check(t, "fleet-command", out)
	for _, m := range b.Log.All() {
		if m.Topic == "hl7edge/south-1/cmd/req" {
			t.Error("south-1, not selected, was sent a command")
		}
	}

	// --json: the same rows, each with the id it was sent under.
	out, err = exec.Command(binPath, "fleet", "command", "reping", `{"name":"ehr"}`, "--broker", b.URL, "--select", "id=north-1,id=north-2,id=south-1", "--json").Output()
	if err != nil {
		t.Fatalf("fleet command to three answering boxes: %v\n%s", err, out)
	}
	var rows []fleetcmd.Result
	if err := json.Unmarshal(out, &rows); err != nil || len(rows) != 3 {
		t.Fatalf("--json rows %s (%v); want three", out, err)
	}
	for _, r := range rows {
		if r.Outcome != fleetcmd.Answered || len(r.CommandID) < 10 {
			t.Errorf("row %+v; want answered with its command id", r)
		}
	}
	for _, m := range b.Log.All() {
		if m.Topic == "hl7edge/north-5/cmd/req" {
			t.Error("the offline north-5 was sent a command")
		}
	}
}
