package appliance_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
)

// TestIdentifyIsCapped: identify blinks for at most an hour; asking for
// 2,000,000,000 seconds (63 years of a blinking front panel) fails,
// naming the limit, and an hour is fine.
func TestIdentifyIsCapped(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-caps")
	r.writeConfig(r.yaml(r.mllpPort, ""))
	op := newOperator(t, r.broker.URL, r.device)
	r.start(appliance.Options{})
	op.waitOnline(t, 0)
	if a := op.send(t, command.Identify, map[string]any{"seconds": 2000000000}); a.Status != command.Failed || !strings.Contains(a.Detail, "3600") {
		t.Errorf("identify for 2e9 s: %s; want failed naming the 3600 s limit", a)
	}
	if a := op.send(t, command.Identify, map[string]any{"seconds": 3600}); a.Status != command.Successful {
		t.Errorf("identify for an hour: %s; want successful", a)
	}
}

// TestStartWarnsAboutReadableSecrets: a password file every user can read
// draws a warning in the log at start, naming the key, the file and the fix.
func TestStartWarnsAboutReadableSecrets(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-secret")
	pass := filepath.Join(r.dir, "ehr.pass")
	if err := os.WriteFile(pass, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pass, 0o644); err != nil {
		t.Fatal(err)
	}
	r.writeConfig(r.yaml(r.mllpPort, fmt.Sprintf("  - name: ehr\n    type: webservice\n    url: https://127.0.0.1:%d/ping\n    logon_id: gw\n    password_file: %s\n",
		mqtttest.FreePort(t), pass)))
	op := newOperator(t, r.broker.URL, r.device)
	rn := r.start(appliance.Options{})
	op.waitOnline(t, 0)
	waitUntil(t, waitLimit, "the start-up warning", func() bool {
		l := rn.logs.String()
		return strings.Contains(l, "secret file readable by other users") && strings.Contains(l, pass) && strings.Contains(l, "chmod 0600")
	})
}
