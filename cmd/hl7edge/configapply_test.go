package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestConfigApplyLocal: `hl7edge config apply` on the box reaches the
// running daemon through the admin socket and may make a change that a
// remote config-apply may not (here: a plain-HTTP web service).
func TestConfigApplyLocal(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	pass := filepath.Join(dir, "ehr.pass")
	if err := os.WriteFile(pass, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf(`device: {id: apply-gw, board: sim}
spool: {dir: %[1]s/spool}
admin: {socket: %[1]s/admin.sock}
sources:
  - {name: in, type: mllp, listen: "127.0.0.1:%[2]d"}
destinations:
  - {name: archive, type: file, dir: %[1]s/out}
`, dir, port)
	cfg := filepath.Join(dir, "hl7edge.yaml")
	if err := os.WriteFile(cfg, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	next := base + fmt.Sprintf("  - {name: bench, type: webservice, url: \"http://127.0.0.1:%d/ping\", logon_id: gw, password_file: %s, allow_insecure_http: true}\n", freePort(t), pass)
	newFile := filepath.Join(dir, "new.yaml")
	if err := os.WriteFile(newFile, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, cfg, filepath.Join(dir, "admin.sock"), fmt.Sprintf("127.0.0.1:%d", port))
	defer d.stop()
	out, err := exec.Command(binPath, "config", "apply", "--config", cfg, "--grace", "1s", newFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "applied") {
		t.Fatalf("config apply: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(cfg); string(got) != next {
		t.Errorf("the configuration file is not the applied one")
	}
}

// TestConfigApplyWaitReportsRollBack: a configuration whose new listener
// cannot bind (the port is taken) is rolled back after its grace period.
// `config apply --wait` exits non-zero with the reason, `status` still
// shows config_rolled_back after the pipeline's restart, and a good
// configuration applied with --wait exits 0 (issue 28, point 2).
func TestConfigApplyWaitReportsRollBack(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	base := fmt.Sprintf(`device: {id: wait-gw, board: sim}
spool: {dir: %[1]s/spool}
admin: {socket: %[1]s/admin.sock}
sources:
  - {name: in, type: mllp, listen: "127.0.0.1:%[2]d"}
destinations:
  - {name: archive, type: file, dir: %[1]s/out}
`, dir, port)
	cfg := filepath.Join(dir, "hl7edge.yaml")
	writeConfig(t, cfg, base)
	bad := filepath.Join(dir, "bad.yaml")
	// The bad file: the same, plus a source on a port someone else holds.
	writeConfig(t, bad, strings.Replace(base, "destinations:", fmt.Sprintf("  - {name: busy, type: mllp, listen: %q}\ndestinations:", taken.Addr().String()), 1))
	d := startDaemon(t, cfg, filepath.Join(dir, "admin.sock"), fmt.Sprintf("127.0.0.1:%d", port))
	defer d.stop()

	out, err := exec.Command(binPath, "config", "apply", "--config", cfg, "--grace", "2s", "--wait", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "rolled back") || !strings.Contains(string(out), "source busy") {
		t.Fatalf("config apply --wait of a configuration that is rolled back: %v, want exit 1 naming source busy\n%s", err, out)
	}
	if got, _ := os.ReadFile(cfg); string(got) != base {
		t.Errorf("after the roll-back the configuration file is not the previous one")
	}
	r, _ := runStatus(t, cfg)
	if !slices.ContainsFunc(r.Health.Alarms, func(a health.Alarm) bool { return a.Kind == appliance.AlarmConfigRolledBack }) {
		t.Errorf("status after the roll-back: alarms %+v, want config_rolled_back", r.Health.Alarms)
	}

	good := filepath.Join(dir, "good.yaml")
	writeConfig(t, good, base+fmt.Sprintf("  - {name: copy, type: file, dir: %s/copy}\n", dir))
	out, err = exec.Command(binPath, "config", "apply", "--config", cfg, "--grace", "1s", "--wait", good).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "kept") {
		t.Fatalf("config apply --wait of a good configuration: %v\n%s", err, out)
	}
}
