package appliance_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestConfigTrialCutShortIsRolledBackAtNextStart: the daemon stops (a
// power cut, a crash, `systemctl restart`) while a configuration is on
// trial. The next process must not keep running it untested: it puts the
// previous file back byte for byte before the first box starts and says
// why on MQTT (config_rolled_back, naming the command).
func TestConfigTrialCutShortIsRolledBackAtNextStart(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-trial-cut")
	old := r.yaml(r.mllpPort, "")
	r.writeConfig(old)
	op := r.operator(t)
	rn := r.start(appliance.Options{})
	op.waitOnline(t, 0)

	next := r.yaml(r.mllpPort, "  - name: copy\n    type: file\n    dir: "+filepath.Join(r.archive, "copy")+"\n")
	a := op.must(t, command.ConfigApply, map[string]any{"yaml": next, "grace": "1h"})
	rn.waitStarts(t, 2)
	if got := r.configFile(); got != next {
		t.Fatal("during the trial the file is not the applied configuration")
	}
	rn.stop(t) // the process ends with the trial an hour from its end

	from := op.Log.Mark()
	rn2 := r.start(appliance.Options{})
	box := rn2.waitStarts(t, 1)
	if got := r.configFile(); got != old {
		t.Errorf("after a start that found a trial cut short, the file is not the previous configuration byte for byte:\n%s", got)
	}
	if n := len(box.Config.Destinations); n != 1 {
		t.Errorf("the first box after the cut runs %d destinations, want the previous configuration's 1", n)
	}
	alarm := op.waitAlarm(t, from, "config_rolled_back")
	if d, _ := alarm["detail"].(string); !strings.Contains(d, a.ID) || !strings.Contains(d, "stopped") {
		t.Errorf("rollback alarm %v: want the detail to name command %s and say the gateway stopped during the trial", alarm, a.ID)
	}
	if _, err := os.Stat(r.cfgPath + ".trial"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("trial record after the roll-back: %v, want it gone", err)
	}
	op.waitState(t, health.Source, "in", health.Up)
}

// TestConfigKeptAfterItsTrialSurvivesARestart: once the trial ended with
// the configuration kept, a restart runs it again; nothing is rolled back.
func TestConfigKeptAfterItsTrialSurvivesARestart(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-trial-kept")
	old := r.yaml(r.mllpPort, "")
	r.writeConfig(old)
	op := r.operator(t)
	rn := r.start(appliance.Options{ApplyGrace: 500 * time.Millisecond})
	op.waitOnline(t, 0)

	next := r.yaml(r.mllpPort, "  - name: copy\n    type: file\n    dir: "+filepath.Join(r.archive, "copy")+"\n")
	from := op.Log.Mark()
	op.must(t, command.ConfigApply, map[string]any{"yaml": next})
	op.waitAlarm(t, from, "config_applied")
	if _, err := os.Stat(r.cfgPath + ".trial"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("trial record after the configuration was kept: %v, want it gone", err)
	}
	rn.stop(t)

	rn2 := r.start(appliance.Options{})
	box := rn2.waitStarts(t, 1)
	if got := r.configFile(); got != next {
		t.Errorf("a kept configuration was replaced at the next start:\n%s", got)
	}
	if n := len(box.Config.Destinations); n != 2 {
		t.Errorf("the box after the restart runs %d destinations, want the kept configuration's 2", n)
	}
}

// TestConfigTrialThatNeverLandedLeavesTheFile: the process ended after the
// trial was recorded but before the new file was in place; the next start
// keeps the file as it is and drops the record.
func TestConfigTrialThatNeverLandedLeavesTheFile(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-trial-none")
	old := r.yaml(r.mllpPort, "")
	r.writeConfig(old)
	rec := `{"id":"cmd-1","previous":` + jsonString(old) + `,"next_sha256":"00","began":"2026-12-07T20:00:00Z"}`
	if err := os.WriteFile(r.cfgPath+".trial", []byte(rec), 0o640); err != nil {
		t.Fatal(err)
	}
	op := r.operator(t)
	rn := r.start(appliance.Options{})
	rn.waitStarts(t, 1)
	op.waitOnline(t, 0)
	if got := r.configFile(); got != old {
		t.Errorf("the file changed:\n%s", got)
	}
	if _, err := os.Stat(r.cfgPath + ".trial"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("trial record after the start: %v, want it gone", err)
	}
	if !strings.Contains(rn.logs.String(), "cmd-1 was never in place") {
		t.Errorf("the log does not say the configuration from cmd-1 was never in place")
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
