package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestRefusedMessageHoldOrDead: a receiver answers AR to one message. The
// destination left at the default (on_reject: hold) is held by it and
// `status` says so with its own advice (not a web service's logon); `spool
// skip` moves it to the dead letters with the operator's reason and the
// rest follow in order. The destination with on_reject: dead moves it
// aside at once and delivers the rest (issue 28, point 3).
func TestRefusedMessageHoldOrDead(t *testing.T) {
	dir := t.TempDir()
	refuse := func(id string) flow.Code {
		if id == "R2" {
			return flow.Rejected
		}
		return flow.Accepted
	}
	lis, ehr := startReceiver(t, mllpNoTLS, refuse), startReceiver(t, mllpNoTLS, refuse)
	port := freePort(t)
	cfg := filepath.Join(dir, "hl7edge.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`device: {id: reject-gw, board: sim}
spool: {dir: %[1]s/spool}
admin: {socket: %[1]s/admin.sock}
sources:
  - {name: lab, type: mllp, listen: "127.0.0.1:%[2]d"}
destinations:
  - {name: lis, type: mllp, address: "%[3]s", max_backoff: 200ms}
  - {name: ehr, type: mllp, address: "%[4]s", on_reject: dead}
`, dir, port, lis.addr, ehr.addr))
	d := startDaemon(t, cfg, filepath.Join(dir, "admin.sock"), fmt.Sprintf("127.0.0.1:%d", port))
	defer d.stop()
	msgs := filepath.Join(dir, "results.hl7")
	var b strings.Builder
	for _, id := range []string{"R1", "R2", "R3"} {
		fmt.Fprintf(&b, "MSH|^~\\&|LAB|H|LIS|H|20261207||ORU^R01|%s|P|2.5\rPID|1||P%s\r\n", id, id)
	}
	writeConfig(t, msgs, b.String())
	if out, err := exec.Command(binPath, "send", "--to", fmt.Sprintf("127.0.0.1:%d", port), msgs).CombinedOutput(); err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}

	waitFor(t, "ehr (on_reject: dead) delivering past the refused message", func() bool { return slices.Equal(ehr.accepted(), []string{"R1", "R3"}) })
	if dl := deadList(t, cfg, "ehr"); len(dl) != 1 || dl[0].ControlID != "R2" || !strings.Contains(dl[0].Reason, "on_reject: dead") {
		t.Errorf("ehr dead letters %+v, want R2 with on_reject in the reason", dl)
	}

	waitFor(t, "lis held", func() bool {
		r, _ := runStatus(t, cfg)
		c, _ := r.Health.Component(health.Destination, "lis")
		return c.State == health.Held
	})
	r, code := runStatus(t, cfg)
	if code != 1 || r.Fault.Code != 2 || !strings.Contains(r.Fault.What, "held by a refused message: destination lis") ||
		!strings.Contains(r.Fault.Advice, "spool skip") || strings.Contains(r.Fault.Advice, "logon_id") {
		t.Errorf("status (exit %d) fault %+v: want code 2 naming lis held by a refused message, advice spool skip and no logon_id", code, r.Fault)
	}
	if got := lis.accepted(); !slices.Equal(got, []string{"R1"}) {
		t.Errorf("lis took %v while held, want only R1", got)
	}

	out, err := exec.Command(binPath, "spool", "skip", "--config", cfg, "--destination", "lis").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--reason") {
		t.Errorf("spool skip without a reason: %v\n%s", err, out)
	}
	out, err = exec.Command(binPath, "spool", "skip", "--config", cfg, "--destination", "lis", "--reason", "wrong order number, ticket 4711").CombinedOutput()
	if err != nil {
		t.Fatalf("spool skip: %v\n%s", err, out)
	}
	waitFor(t, "lis delivering after the skip", func() bool { return slices.Equal(lis.accepted(), []string{"R1", "R3"}) })
	if dl := deadList(t, cfg, "lis"); len(dl) != 1 || dl[0].ControlID != "R2" || !strings.Contains(dl[0].Reason, "ticket 4711") {
		t.Errorf("lis dead letters %+v, want R2 with the operator's reason", dl)
	}
	out, err = exec.Command(binPath, "spool", "skip", "--config", cfg, "--destination", "lis", "--reason", "again").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no message is failing") {
		t.Errorf("spool skip with nothing failing: %v\n%s", err, out)
	}

	// dead_letter lasts while a dead letter does: purged one --guid at a
	// time, the last one ends it and the box is healthy again.
	if !hasAlarm(t, cfg, health.AlarmDeadLetter) {
		t.Errorf("no dead_letter alarm with two dead letters")
	}
	for _, dest := range []string{"lis", "ehr"} {
		g := deadList(t, cfg, dest)[0].GUID
		if out, err := exec.Command(binPath, "spool", "dead", "purge", "--config", cfg, "--destination", dest, "--guid", g).CombinedOutput(); err != nil || !strings.Contains(string(out), `"purged":1`) {
			t.Fatalf("spool dead purge --guid %s: %v\n%s", g, err, out)
		}
	}
	if hasAlarm(t, cfg, health.AlarmDeadLetter) {
		t.Errorf("dead_letter still active with no dead letter left")
	}
	// (This machine's clock may be unsynchronised: FAULT 4 is not ours.)
	r, _ = runStatus(t, cfg)
	for _, p := range r.Problems {
		if strings.Contains(p, "dead_letter") || strings.Contains(p, "destination") {
			t.Errorf("status with nothing dead and every destination up: %s", p)
		}
	}
}

func hasAlarm(t *testing.T, cfg, kind string) bool {
	t.Helper()
	r, _ := runStatus(t, cfg)
	return slices.ContainsFunc(r.Health.Alarms, func(a health.Alarm) bool { return a.Kind == kind })
}

var mllpNoTLS = mllp.ServerTLS{}

func writeConfig(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// deadList runs `hl7edge spool dead list --json`.
func deadList(t *testing.T, cfg, dest string) []appliance.DeadLetterInfo {
	t.Helper()
	out, err := exec.Command(binPath, "spool", "dead", "list", "--config", cfg, "--destination", dest, "--json").Output()
	if err != nil {
		t.Fatalf("spool dead list: %v\n%s", err, out)
	}
	var dl []appliance.DeadLetterInfo
	if err := json.Unmarshal(out, &dl); err != nil {
		t.Fatalf("spool dead list printed %q: %v", out, err)
	}
	return dl
}
