package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/build/golden"
	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetsim"
	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/rollout"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/device/trust/minisigntest"
)

// signedImage writes an image and its minisign signature.
func signedImage(t *testing.T, key minisigntest.Key) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "hl7edge-2.0")
	if err := os.WriteFile(img, []byte("image of version 2.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	key.SignFile(t, img, false)
	return img
}

// runCLI runs the real binary and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatalf("%v: %v", args, err)
	return "", "", -1
}

// sentIDs is the command ids each box was sent firmware-update under, in
// order, read from the broker's own record of what was published.
func sentIDs(t *testing.T, b *mqtttest.Broker) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, m := range b.Log.All() {
		dev, ok := strings.CutSuffix(strings.TrimPrefix(m.Topic, "hl7edge/"), "/cmd/req")
		if !ok || !trust.IsEnvelope(m.Payload) {
			continue
		}
		id, name := trust.Peek(m.Payload)
		if name == "firmware-update" {
			out[dev] = append(out[dev], id)
		}
	}
	return out
}

// TestRolloutStopsAfterFailedWave is issue 29's first must-show, on
// simulated gateways: in three waves (canary first) one box of wave 2
// rolls back; the rollout stops after wave 2 naming that box and its
// reason, wave 3's boxes get nothing, the offline box is skipped and the
// box already on the version counts as done; --resume continues with
// wave 3, and no box is sent the update twice.
func TestRolloutStopsAfterFailedWave(t *testing.T) {
	key := minisigntest.NewKey(t)
	img := signedImage(t, key)
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	north := func(extra ...string) map[string]string {
		l := map[string]string{"site": "north"}
		for _, e := range extra {
			k, v, _ := strings.Cut(e, "=")
			l[k] = v
		}
		return l
	}
	keys := []string{key.Pub}
	startFleet(t, b.URL, []fleetsim.Spec{
		{ID: "n-canary", Version: "1.0", Labels: north("ring=canary"), TrustKeys: keys},
		{ID: "n-a", Version: "1.0", Labels: north(), TrustKeys: keys},
		{ID: "n-b", Version: "1.0", Labels: north(), TrustKeys: keys, FirmwareFail: true},
		{ID: "n-c", Version: "1.0", Labels: north(), TrustKeys: keys},
		{ID: "n-d", Version: "1.0", Labels: north(), TrustKeys: keys},
		{ID: "n-e", Version: "1.0", Labels: north(), TrustKeys: keys},
		{ID: "n-new", Version: "2.0", Labels: north(), TrustKeys: keys},
		{ID: "n-off", Version: "1.0", Labels: north(), TrustKeys: keys, Offline: fleetsim.CleanStop},
		{ID: "s-a", Version: "1.0", Labels: map[string]string{"site": "south"}, TrustKeys: keys},
	})
	state := filepath.Join(t.TempDir(), "rollout.json")
	args := []string{"fleet", "update", "--broker", b.URL, "--image", img, "--version", "2.0", "--url", "https://updates.example/hl7edge-2.0",
		"--key", key.SecFile, "--select", "site=north", "--waves", "1,3,100%", "--max-failures", "0", "--deadline", "60s", "--state", state}

	plan, stderr, code := runCLI(t, append(args, "--dry-run")...)
	if code != 0 {
		t.Fatalf("--dry-run: exit %d\n%s%s", code, plan, stderr)
	}
	golden.Check(t, "fleet-update-dry-run", []byte(plan))
	if _, err := os.Stat(state); err == nil {
		t.Fatal("--dry-run wrote a state file")
	}
	if n := len(sentIDs(t, b)); n != 0 {
		t.Fatalf("--dry-run sent to %d boxes", n)
	}

	out, stderr, code := runCLI(t, args...)
	t.Logf("first run:\n%s%s", out, stderr)
	if code != 1 || !strings.Contains(out, "stopped after wave 2 of 3") || !strings.Contains(out, "n-b (wave 2): rolled_back: 2.0 was unhealthy at the end of its trial") {
		t.Fatalf("exit %d; want 1 and a stop after wave 2 naming n-b and its reason:\n%s%s", code, out, stderr)
	}
	sent := sentIDs(t, b)
	for _, id := range []string{"n-c", "n-d", "n-e", "n-new", "n-off", "s-a"} {
		if len(sent[id]) != 0 {
			t.Errorf("%s was sent the update (%v); wave 3, done, offline and unselected boxes must be untouched", id, sent[id])
		}
	}
	st, err := rollout.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"n-canary": rollout.Committed, "n-a": rollout.Committed, "n-b": rollout.Failed, "n-c": rollout.Pending,
		"n-d": rollout.Pending, "n-e": rollout.Pending, "n-new": rollout.Done, "n-off": rollout.Skipped}
	checkState(t, st, want)

	out, stderr, code = runCLI(t, "fleet", "update", "--broker", b.URL, "--key", key.SecFile, "--resume", state)
	t.Logf("resume:\n%s%s", out, stderr)
	if code != 0 || !strings.Contains(out, "wave 3/3") || strings.Contains(out, "wave 1/3") || strings.Contains(out, "wave 2/3") {
		t.Fatalf("--resume: exit %d; want 0 and wave 3 alone:\n%s%s", code, out, stderr)
	}
	st, err = rollout.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	want["n-c"], want["n-d"], want["n-e"] = rollout.Committed, rollout.Committed, rollout.Committed
	checkState(t, st, want)
	for dev, ids := range sentIDs(t, b) {
		if len(ids) != 1 {
			t.Errorf("%s was sent firmware-update %d times: %v", dev, len(ids), ids)
		}
	}
}

func checkState(t *testing.T, st *rollout.State, want map[string]string) {
	t.Helper()
	for _, x := range st.Boxes {
		if w, ok := want[x.ID]; ok && x.Status != w {
			t.Errorf("%s: %s (%s) in the state file, want %s", x.ID, x.Status, x.Reason, w)
		}
	}
	if len(st.Boxes) != len(want) {
		t.Errorf("state file holds %d boxes, want %d: %+v", len(st.Boxes), len(want), st.Boxes)
	}
}

// TestRolloutResumesAfterKill is issue 29's third must-show: the operator's
// process is SIGKILLed while a wave is on trial; --resume finishes the
// rollout, and every box got the update exactly once, under one id.
func TestRolloutResumesAfterKill(t *testing.T) {
	key := minisigntest.NewKey(t)
	img := signedImage(t, key)
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	var specs []fleetsim.Spec
	for i := range 20 {
		specs = append(specs, fleetsim.Spec{ID: fmt.Sprintf("gw%02d", i), Version: "1.0", TrustKeys: []string{key.Pub}, Trial: 3 * time.Second})
	}
	startFleet(t, b.URL, specs)
	state := filepath.Join(t.TempDir(), "rollout.json")
	cmd := exec.Command(binPath, "fleet", "update", "--broker", b.URL, "--image", img, "--version", "2.0", "--url", "https://updates.example/x",
		"--key", key.SecFile, "--select", "all", "--waves", "5,100%", "--max-failures", "0", "--deadline", "2m", "--state", state)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill once wave 2's commands are going out: its boxes are then on
	// trial (3 s), some perhaps not yet sent theirs.
	for deadline := time.Now().Add(2 * time.Minute); len(sentIDs(t, b)) <= 5; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("wave 2 did not start within 2 minutes:\n%s", out.String())
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killedAt := sentIDs(t, b)
	t.Logf("killed with %d of 20 boxes sent the update:\n%s", len(killedAt), out.String())

	o, stderr, code := runCLI(t, "fleet", "update", "--broker", b.URL, "--key", key.SecFile, "--resume", state, "--deadline", "2m")
	if code != 0 {
		t.Fatalf("--resume after a kill: exit %d\n%s%s", code, o, stderr)
	}
	st, err := rollout.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range st.Boxes {
		if x.Status != rollout.Committed {
			t.Errorf("%s: %s (%s); want committed", x.ID, x.Status, x.Reason)
		}
	}
	sent := sentIDs(t, b)
	for _, sp := range specs {
		ids := sent[sp.ID]
		if len(ids) == 0 {
			t.Errorf("%s was never sent the update", sp.ID)
		}
		for _, id := range ids[1:] {
			if id != ids[0] {
				t.Errorf("%s was sent the update under two ids: %v", sp.ID, ids)
			}
		}
	}
	resent := 0
	for _, ids := range sent {
		resent += len(ids) - 1
	}
	t.Logf("after --resume: 20 committed; %d commands sent again under their first id", resent)
}

// TestRolloutDeadlineAndRefusal: a box that stays on trial past --deadline
// and a box that refuses the signed command both count as failures, each
// with its reason; within --max-failures the rollout completes.
func TestRolloutDeadlineAndRefusal(t *testing.T) {
	key := minisigntest.NewKey(t)
	img := signedImage(t, key)
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	keys := []string{key.Pub}
	startFleet(t, b.URL, []fleetsim.Spec{
		{ID: "gw-ok", Version: "1.0", TrustKeys: keys},
		{ID: "gw-slow", Version: "1.0", TrustKeys: keys, Trial: time.Hour},
		{ID: "gw-nokeys", Version: "1.0"},
	})
	state := filepath.Join(t.TempDir(), "rollout.json")
	out, stderr, code := runCLI(t, "fleet", "update", "--broker", b.URL, "--image", img, "--version", "2.0", "--url", "https://updates.example/x",
		"--key", key.SecFile, "--select", "all", "--waves", "100%", "--max-failures", "2", "--deadline", "3s", "--state", state)
	if code != 0 {
		t.Fatalf("exit %d; want 0 (two failures, two allowed)\n%s%s", code, out, stderr)
	}
	st, err := rollout.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"gw-ok":     "",
		"gw-slow":   "no outcome within --deadline 3s (last state trial)",
		"gw-nokeys": "rejected: signed command refused: this gateway has no trust.keys",
	}
	for _, x := range st.Boxes {
		if w := want[x.ID]; (w == "") != (x.Status == rollout.Committed) || !strings.HasPrefix(x.Reason, w) {
			t.Errorf("%s: %s (%q); want reason starting %q", x.ID, x.Status, x.Reason, w)
		}
	}
}
