package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetsim"
	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetview"
	"github.com/hl7edge/hl7edge/device/frontpanel"
	"github.com/hl7edge/hl7edge/device/mqttagent"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/pipeline/logtest"
)

// fleetSpecs is a fleet where every tenth gateway is cut off (Last Will),
// every tenth stops cleanly, a fault code 1-5 on every seventh and an
// alarm on every eleventh.
func fleetSpecs(n int) []fleetsim.Spec {
	specs := make([]fleetsim.Spec, n)
	for i := range specs {
		sp := fleetsim.Spec{ID: fmt.Sprintf("gw%04d", i), Version: "1.4." + strconv.Itoa(i%3), Queued: int64(i % 50),
			Labels: map[string]string{"site": []string{"north", "south"}[i%2]}}
		if i%20 == 0 {
			sp.Labels["ring"] = "canary"
		}
		switch i % 10 {
		case 3:
			sp.Offline = fleetsim.Cut
		case 6:
			sp.Offline = fleetsim.CleanStop
		}
		if i%7 == 2 {
			sp.Fault = frontpanel.Fault(1 + i%5)
		}
		if i%11 == 4 {
			sp.Alarm = "dead_letter"
		}
		specs[i] = sp
	}
	return specs
}

// fleetSize is HL7EDGE_FLEET_N gateways (make fleet-1000), else a size the
// suite affords.
func fleetSize(t *testing.T) int {
	if s := os.Getenv("HL7EDGE_FLEET_N"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("HL7EDGE_FLEET_N=%q", s)
		}
		return n
	}
	return 60
}

// TestFleetAgainstMosquitto runs N simulated gateways' real MQTT agents
// against a real Mosquitto, takes some offline by Last Will and some by a
// clean stop, and checks that `hl7edge fleet --json` lists every one
// correctly, worst first; it reports how long the command took from start
// to the full table.
func TestFleetAgainstMosquitto(t *testing.T) {
	url := mqtttest.StartMosquitto(t)
	n := fleetSize(t)
	specs := fleetSpecs(n)
	ctx := t.Context()
	start := time.Now()
	fleet, err := fleetsim.Start(ctx, url, t.TempDir(), specs)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Stop()

	// Wait, through the same reader, until every gateway's birth and health
	// are on the broker; then take the offline ones away and wait for that.
	obs, err := fleetview.Open(ctx, fleetview.Options{MQTT: mqttagent.Config{Broker: url}})
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	waitRows := func(what string, ok func([]fleetview.Row) bool) {
		t.Helper()
		deadline := time.After(2 * time.Minute)
		for {
			rows := obs.View.Rows()
			if ok(rows) {
				return
			}
			select {
			case <-obs.View.Changed():
			case <-time.After(time.Second):
			case <-deadline:
				off, noHealth := 0, 0
				var example fleetview.Row
				for _, r := range rows {
					if !r.Online {
						off++
						example = r
					}
					if r.HealthTime.IsZero() {
						noHealth++
						example = r
					}
				}
				t.Fatalf("%s: not within 2 minutes; %d rows, %d offline, %d without health, e.g. %+v", what, len(rows), off, noHealth, example)
			}
		}
	}
	waitRows("every gateway online with health", func(rows []fleetview.Row) bool {
		if len(rows) != n {
			return false
		}
		for _, r := range rows {
			if !r.Online || r.HealthTime.IsZero() {
				return false
			}
		}
		return true
	})
	t.Logf("%d gateways connected with birth and health in %s", n, time.Since(start).Round(time.Millisecond))
	fleet.Leave()
	offline := 0
	for _, sp := range specs {
		if sp.Offline != fleetsim.StayOnline {
			offline++
		}
	}
	waitRows("the offline ones offline", func(rows []fleetview.Row) bool {
		k := 0
		for _, r := range rows {
			if !r.Online {
				k++
			}
		}
		return k == offline
	})

	t0 := time.Now()
	out, err := exec.Command(binPath, "fleet", "--broker", url, "--json").Output()
	took := time.Since(t0)
	if err != nil {
		t.Fatalf("hl7edge fleet: %v", err)
	}
	var rows []fleetview.Row
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("fleet --json: %v\n%s", err, out)
	}
	t.Logf("hl7edge fleet --json: %d gateways (%d offline) from start to the full table in %s", len(rows), offline, took.Round(time.Millisecond))
	if len(rows) != n {
		t.Fatalf("fleet listed %d gateways, want %d", len(rows), n)
	}
	byID := map[string]fleetview.Row{}
	for _, r := range rows {
		byID[r.ID] = r
	}
	for _, sp := range specs {
		r, ok := byID[sp.ID]
		if !ok {
			t.Errorf("%s missing from the table", sp.ID)
			continue
		}
		wantAlarms := []string(nil)
		if sp.Alarm != "" {
			wantAlarms = []string{sp.Alarm}
		}
		if r.Online != (sp.Offline == fleetsim.StayOnline) || r.Version != sp.Version || r.Queued != sp.Queued ||
			r.Fault != int(sp.Fault) || !slices.Equal(r.Alarms, wantAlarms) || r.Since.IsZero() {
			t.Errorf("%s: row %+v, spec %+v", sp.ID, r, sp)
		}
	}
	// Worst first: every offline gateway before every online one, and
	// faulted online ones before the rest.
	sorted := slices.Clone(rows)
	fleetview.Sort(sorted)
	if !slices.EqualFunc(rows, sorted, func(a, b fleetview.Row) bool { return a.ID == b.ID }) {
		t.Error("rows are not sorted worst first")
	}
	if rows[0].Online || rows[len(rows)-1].Online && rows[len(rows)-1].Fault != 0 {
		t.Errorf("first row %+v, last row %+v", rows[0], rows[len(rows)-1])
	}

	// --select picks by label: every north box, online or not, and no other.
	out, err = exec.Command(binPath, "fleet", "--broker", url, "--json", "--select", "site=north,ring=canary").Output()
	if err != nil {
		t.Fatalf("hl7edge fleet --select: %v", err)
	}
	rows = nil
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("fleet --select --json: %v\n%s", err, out)
	}
	if want := (n + 19) / 20; len(rows) != want {
		t.Errorf("--select site=north,ring=canary listed %d gateways, want %d", len(rows), want)
	}
	for _, r := range rows {
		if r.Labels["site"] != "north" || r.Labels["ring"] != "canary" {
			t.Errorf("--select site=north,ring=canary listed %s with labels %v", r.ID, r.Labels)
		}
	}

	// The text table says the same in words.
	text, err := exec.Command(binPath, "fleet", "--broker", url).Output()
	if err != nil {
		t.Fatal(err)
	}
	head := fmt.Sprintf("%d gateways: %d online, %d offline", n, n-offline, offline)
	if !bytes.Contains(text, []byte(head)) || !bytes.Contains(text, []byte("OFFLINE")) || !bytes.Contains(text, []byte("(last seen)")) {
		t.Errorf("table:\n%s", text)
	}
	// --watch redraws in place until interrupted.
	w := exec.Command(binPath, "fleet", "--broker", url, "--watch", "--every", "200ms")
	var screen logtest.Buffer
	w.Stdout = &screen
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	clear := []byte("\x1b[H\x1b[2J")
	for deadline := time.Now().Add(30 * time.Second); bytes.Count(screen.Bytes(), clear) < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			_ = w.Process.Kill()
			t.Fatalf("--watch drew %d screens in 30s", bytes.Count(screen.Bytes(), clear))
		}
	}
	_ = w.Process.Signal(os.Interrupt)
	if err := w.Wait(); err != nil {
		t.Errorf("--watch after Ctrl-C: %v", err)
	}
	if frames := bytes.Split(screen.Bytes(), clear); !bytes.Contains(frames[len(frames)-1], []byte(head)) {
		t.Errorf("last --watch screen:\n%s", frames[len(frames)-1])
	}
	if testing.Verbose() && n <= 100 {
		t.Logf("hl7edge fleet:\n%s", text)
	}
}
