package appliance_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
)

// TestFirmwareUpdateIsLogged: what a firmware-update does is in the
// daemon's log as records of component firmware, here a download that
// fails and its refusal. The arm64 system rig found these records missing
// from the journal: the manager was built without the box's logger and
// wrote to a discard handler.
func TestFirmwareUpdateIsLogged(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-fwlog")
	closed := mqtttest.FreePort(t) // nothing listens: the download fails
	r.writeConfig(r.yaml(r.mllpPort, "firmware:\n  dir: "+filepath.Join(r.dir, "firmware")+"\n"))
	op := r.operator(t)
	rn := r.start(appliance.Options{})
	op.waitOnline(t, 0)
	a := op.send(t, command.FirmwareUpdate, map[string]any{
		"url": fmt.Sprintf("https://127.0.0.1:%d/hl7edge-10.0", closed), "version": "10.0", // newer than the rig's 9.9.9-test
		"sha256": strings.Repeat("ab", 32), "minisig": "untrusted comment: x\nRUQ\n",
	})
	if a.Status != command.Failed || !strings.Contains(a.Detail, "download failed") {
		t.Fatalf("%s, want failed naming the download", a)
	}
	logs := rn.logs.String()
	for _, want := range []string{`msg="firmware download" component=firmware`, `msg="firmware update rejected" component=firmware`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no record %s in the log", want)
		}
	}
}
