package appliance_test

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestConfigApplyInvalid: a configuration with an unknown key is refused
// with the line named; the file is unchanged byte for byte and the box is
// not restarted. Missing YAML and a bad grace are refused too.
func TestConfigApplyInvalid(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-invalid")
	good := r.yaml(r.mllpPort, "")
	r.writeConfig(good)
	op := r.operator(t)
	rn := r.start(appliance.Options{})
	op.waitOnline(t, 0)

	// Line 4 is "  board: sim"; the unknown key goes right after it.
	lines := strings.Split(good, "\n")
	if lines[3] != "  board: sim" {
		t.Fatalf("test configuration changed shape: line 4 is %q", lines[3])
	}
	bad := strings.Join(append(append(append([]string{}, lines[:4]...), "  colour: blue"), lines[4:]...), "\n")
	a := op.send(t, command.ConfigApply, map[string]any{"yaml": bad, "grace": "1s"})
	if a.Status != command.Failed || !a.accepted || !strings.Contains(a.Detail, "line 5") || !strings.Contains(a.Detail, "colour") {
		t.Errorf("%s: want failed, naming line 5 and the key colour", a)
	}
	if !strings.Contains(a.Detail, "current one stays") {
		t.Errorf("%s: want the detail to say the current configuration stays", a)
	}

	// A mistake inside a destination is named by its line too.
	badDest := strings.Replace(good, "    dir: "+r.archive, "    dir: "+r.archive+"\n    colour: blue", 1)
	a = op.send(t, command.ConfigApply, map[string]any{"yaml": badDest})
	wantLine := fmt.Sprintf("line %d", strings.Count(good[:strings.Index(good, "    dir: "+r.archive)], "\n")+2)
	if a.Status != command.Failed || !strings.Contains(a.Detail, wantLine) || !strings.Contains(a.Detail, "colour") {
		t.Errorf("%s: want failed naming %s and colour", a, wantLine)
	}

	if a := op.send(t, command.ConfigApply, map[string]any{}); a.Status != command.Failed || !strings.Contains(a.Detail, `"yaml"`) {
		t.Errorf("config-apply without yaml: %s, want failed asking for \"yaml\"", a)
	}
	if a := op.send(t, command.ConfigApply, map[string]any{"yaml": good, "grace": "soon"}); a.Status != command.Failed || !strings.Contains(a.Detail, "grace") {
		t.Errorf("config-apply with grace \"soon\": %s, want failed naming grace", a)
	}
	if got := r.configFile(); got != good {
		t.Errorf("the configuration file changed after refused applies:\n%s", got)
	}
	// A later command is answered by the same, unrestarted box.
	op.health(t)
	if n := rn.starts(); n != 1 {
		t.Errorf("a refused configuration restarted the box (%d starts)", n)
	}
	if ents, _ := filepath.Glob(filepath.Join(r.dir, ".hl7edge-config-*")); len(ents) != 0 {
		t.Errorf("temporary files left next to the configuration: %v", ents)
	}
}

// TestConfigApplyRollback: a valid configuration that breaks the box (its
// MLLP source must listen on a port another program holds) is written and
// tried; after the grace period the box is worse off, so a
// config_rolled_back alarm goes out on MQTT, the old file is restored byte
// for byte, and the box restarts on the old configuration: its MLLP source
// takes messages on the old port again.
func TestConfigApplyRollback(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-rollback")
	old := r.yaml(r.mllpPort, "")
	r.writeConfig(old)
	op := r.operator(t)
	rn := r.start(appliance.Options{})
	op.waitOnline(t, 0)
	op.waitState(t, health.Source, "in", health.Up)
	mustSendHL7(t, r.mllpPort, hl7Message("CTRL-RB-1"))

	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldPort := held.Addr().(*net.TCPAddr).Port
	broken := r.yaml(heldPort, "")

	from := op.Log.Mark()
	a := op.must(t, command.ConfigApply, map[string]any{"yaml": broken, "grace": "2s"})
	if !strings.Contains(a.Detail, "2s") {
		t.Errorf("%s: want the detail to name the 2s grace", a)
	}
	if got := r.configFile(); got != broken {
		t.Errorf("during the trial the file is not the applied configuration")
	}
	trial := rn.waitStarts(t, 2)
	if trial.Config.Sources[0].Config.(*mllp.ListenerConfig).Listen != fmt.Sprintf("127.0.0.1:%d", heldPort) {
		t.Fatalf("the trial box listens on %s, want the held port %d", trial.Config.Sources[0].Config.(*mllp.ListenerConfig).Listen, heldPort)
	}
	alarm := op.waitAlarm(t, from, "config_rolled_back")
	detail, _ := alarm["detail"].(string)
	if !strings.Contains(detail, "source in is down") {
		t.Errorf("rollback alarm %v: want the detail to say source in is down", alarm)
	}
	if got := r.configFile(); got != old {
		t.Errorf("after the rollback the file is not the old configuration byte for byte:\n%s", got)
	}
	restored := rn.waitStarts(t, 3)
	if restored.Config.Sources[0].Config.(*mllp.ListenerConfig).Listen != fmt.Sprintf("127.0.0.1:%d", r.mllpPort) {
		t.Errorf("the restarted box listens on %s, want the old port %d", restored.Config.Sources[0].Config.(*mllp.ListenerConfig).Listen, r.mllpPort)
	}
	mustSendHL7(t, r.mllpPort, hl7Message("CTRL-RB-2"))
	waitUntil(t, waitLimit, "both messages archived", func() bool { return files(t, r.archive) == 2 })
	op.waitState(t, health.Source, "in", health.Up)
	if kinds := op.alarms(from); strings.Contains(strings.Join(kinds, ","), "config_applied") {
		t.Errorf("alarms %v: a rolled-back configuration was also reported applied", kinds)
	}
	// The rollback is final: no further restarts once the old box is up.
	op.health(t)
	if n := rn.starts(); n != 3 {
		t.Errorf("%d starts, want 3 (original, trial, restored)", n)
	}
}

// TestConfigApplyGood: a valid configuration that adds a second file
// destination is kept: config_applied after the grace period
// (Options.ApplyGrace, as no grace is given), the file holds the new YAML,
// the new destination is in the health snapshot and receives messages.
func TestConfigApplyGood(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-apply")
	old := r.yaml(r.mllpPort, "")
	r.writeConfig(old)
	op := r.operator(t)
	rn := r.start(appliance.Options{ApplyGrace: 1500 * time.Millisecond})
	op.waitOnline(t, 0)

	copyDir := filepath.Join(r.archive, "copy") // under archive: where a remote change may add one
	next := r.yaml(r.mllpPort, "  - name: copy\n    type: file\n    dir: "+copyDir+"\n")
	from := op.Log.Mark()
	a := op.must(t, command.ConfigApply, map[string]any{"yaml": next})
	var data map[string]string
	a.decode(t, &data)
	if data["grace"] != "1.5s" {
		t.Errorf("%s: want grace 1.5s from Options.ApplyGrace", a)
	}
	_, s2 := op.waitOnline(t, from)
	op.waitAlarm(t, from, "config_applied")
	if kinds := op.alarms(from); strings.Contains(strings.Join(kinds, ","), "config_rolled_back") {
		t.Errorf("alarms %v: a healthy configuration was rolled back", kinds)
	}
	if got := r.configFile(); got != next {
		t.Errorf("the file does not hold the applied configuration:\n%s", got)
	}
	s := op.health(t)
	c, ok := s.Component(health.Destination, "copy")
	if !ok || c.State != health.Up {
		t.Errorf("health after apply: copy present %v state %q, want up", ok, c.State)
	}
	mustSendHL7(t, r.mllpPort, hl7Message("CTRL-NEW-1"))
	waitUntil(t, waitLimit, "the message in both file destinations", func() bool {
		return files(t, r.archive) == 1 && files(t, copyDir) == 1
	})
	var got struct{ YAML string }
	op.must(t, command.ConfigGet, nil).decode(t, &got)
	if got.YAML != next {
		t.Errorf("config-get after apply does not return the new file")
	}
	if n := rn.starts(); n != 2 {
		t.Errorf("%d starts, want 2", n)
	}
	if b := rn.box(2); b.Agent.Session() != s2 {
		t.Errorf("box 2 session %d, birth said %d", b.Agent.Session(), s2)
	}
}
