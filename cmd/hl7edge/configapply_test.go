package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
