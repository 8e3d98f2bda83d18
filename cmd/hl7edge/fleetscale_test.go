package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetcmd"
	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetsim"
	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/rollout"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/device/trust/minisigntest"
)

// TestFleetAtScale is issue 29's 1,000-gateway must-shows (make fleet-1000;
// HL7EDGE_FLEET_N boxes, 60 in the suite) on a real Mosquitto: `fleet
// command reping --select site=north` gives one row per north box; a
// rollout with 1% of the boxes rolling back completes under
// --max-failures 2%, and with --max-failures 0 stops after exactly the
// wave the first failure is in, touching no later box. It reports the
// time to the last commit and the operator's CPU and memory.
func TestFleetAtScale(t *testing.T) {
	n := fleetSize(t)
	key := minisigntest.NewKey(t)
	img := signedImage(t, key)
	url := mqtttest.StartMosquitto(t)
	specs := make([]fleetsim.Spec, n)
	failing := map[string]bool{}
	for i := range specs {
		specs[i] = fleetsim.Spec{ID: fmt.Sprintf("gw%04d", i), Version: "1.0", TrustKeys: []string{key.Pub},
			Labels: map[string]string{"site": []string{"north", "south"}[i%2]}, FirmwareFail: i%100 == 3}
		failing[specs[i].ID] = specs[i].FirmwareFail
	}
	startFleet(t, url, specs)

	out, err := exec.Command(binPath, "fleet", "command", "reping", `{"name":"ehr"}`, "--broker", url, "--select", "site=north", "--json", "--timeout", "2m").Output()
	if err != nil {
		t.Fatalf("fleet command reping: %v\n%s", err, out)
	}
	var rows []fleetcmd.Result
	if err := json.Unmarshal(out, &rows); err != nil || len(rows) != (n+1)/2 {
		t.Fatalf("fleet command reping --select site=north: %d rows (%v); want %d", len(rows), err, (n+1)/2)
	}
	for _, r := range rows {
		if r.Outcome != fleetcmd.Answered || !strings.HasPrefix(r.Device, "gw") {
			t.Errorf("row %+v; want answered", r)
		}
	}

	// 1% fail, 2% allowed: the rollout completes.
	state := filepath.Join(t.TempDir(), "r2.json")
	cmd := exec.Command(binPath, "fleet", "update", "--broker", url, "--image", img, "--version", "2.0", "--url", "https://updates.example/x",
		"--key", key.SecFile, "--select", "all", "--max-failures", "2%", "--deadline", "5m", "--state", state)
	start := time.Now()
	out, err = cmd.Output()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("rollout with 1%% failing under --max-failures 2%%: %v\n%s", err, out)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	st, err := rollout.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, b := range st.Boxes {
		if want := map[bool]string{true: rollout.Failed, false: rollout.Committed}[failing[b.ID]]; b.Status != want {
			t.Errorf("%s: %s (%s), want %s", b.ID, b.Status, b.Reason, want)
		}
		if b.Status == rollout.Failed {
			failed++
		}
	}
	t.Logf("rollout of %d gateways, %d rolled back, --max-failures 2%%: complete in %s (start to last commit); operator CPU %s, max RSS %d MiB",
		n, failed, took.Round(time.Millisecond), cpu.Round(time.Millisecond), ru.Maxrss/1024)

	// No failure allowed: it stops after the wave of the first failing box.
	state = filepath.Join(t.TempDir(), "r3.json")
	out, _ = exec.Command(binPath, "fleet", "update", "--broker", url, "--image", img, "--version", "3.0", "--url", "https://updates.example/x",
		"--key", key.SecFile, "--select", "all", "--max-failures", "0", "--deadline", "5m", "--state", state).Output()
	st, err = rollout.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	stopWave := 0
	for _, b := range st.Boxes {
		if failing[b.ID] && (stopWave == 0 || b.Wave < stopWave) {
			stopWave = b.Wave
		}
	}
	if !strings.Contains(string(out), fmt.Sprintf("stopped after wave %d of %d", stopWave, st.Waves)) {
		t.Fatalf("with --max-failures 0 want a stop after wave %d:\n%s", stopWave, tail(string(out)))
	}
	untouched := 0
	for _, b := range st.Boxes {
		if b.Wave > stopWave && (b.Status != rollout.Pending || b.CommandID != "") {
			t.Errorf("%s of wave %d was touched (%s) after the stop in wave %d", b.ID, b.Wave, b.Status, stopWave)
		}
		if b.Wave > stopWave {
			untouched++
		}
	}
	t.Logf("with --max-failures 0: stopped after wave %d of %d, %d boxes untouched", stopWave, st.Waves, untouched)
}

// tail is the last lines of a long output.
func tail(s string) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}
