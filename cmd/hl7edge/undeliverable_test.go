package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/device/appliance"
)

// TestUndeliverableListRetryPurge: a message no rule matched is listed by
// `spool undeliverable list` (identifiers and type, no content); after the
// routing is fixed, `retry` routes it by the running daemon's new rules and
// it is delivered under its GUID; `purge --guid` deletes one (issue 28,
// point 4).
func TestUndeliverableListRetryPurge(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	base := fmt.Sprintf(`device: {id: undeliv-gw, board: sim}
spool: {dir: %[1]s/spool}
admin: {socket: %[1]s/admin.sock}
sources:
  - {name: lab, type: mllp, listen: "127.0.0.1:%[2]d"}
destinations:
  - {name: archive, type: file, dir: %[1]s/out, match: {all: ["MSH-9.1 in ORU"]}}
`, dir, port)
	cfg := filepath.Join(dir, "hl7edge.yaml")
	writeConfig(t, cfg, base)
	d := startDaemon(t, cfg, filepath.Join(dir, "admin.sock"), fmt.Sprintf("127.0.0.1:%d", port))
	defer d.stop()
	msgs := filepath.Join(dir, "adt.hl7")
	writeConfig(t, msgs, "MSH|^~\\&|HIS|H|GW|H|20261207||ADT^A01|U1|P|2.5\rPID|1||P1\r\nMSH|^~\\&|HIS|H|GW|H|20261207||ZZZ^Z01|U2|P|2.5\rPID|1||P2\r\n")
	if out, err := exec.Command(binPath, "send", "--to", fmt.Sprintf("127.0.0.1:%d", port), msgs).CombinedOutput(); err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}
	list := func() []appliance.UndeliverableInfo {
		t.Helper()
		out, err := exec.Command(binPath, "spool", "undeliverable", "list", "--config", cfg, "--json").CombinedOutput()
		if err != nil {
			t.Fatalf("spool undeliverable list: %v\n%s", err, out)
		}
		var us []appliance.UndeliverableInfo
		if err := json.Unmarshal(out, &us); err != nil {
			t.Fatalf("spool undeliverable list printed %q: %v", out, err)
		}
		return us
	}
	us := list()
	if len(us) != 2 || us[0].ControlID != "U1" || us[0].MessageType != "ADT^A01" || us[1].ControlID != "U2" {
		t.Fatalf("undeliverable %+v, want U1 (ADT^A01) and U2", us)
	}
	if out, _ := exec.Command(binPath, "spool", "undeliverable", "list", "--config", cfg).CombinedOutput(); strings.Contains(string(out), "PID|") {
		t.Errorf("undeliverable list shows content:\n%s", out)
	}

	// spool stats on the screen shows the sources' counters too, and says
	// what its message count is (issue 28, point 9).
	if out, err := exec.Command(binPath, "spool", "stats", "--config", cfg).CombinedOutput(); err != nil || !strings.Contains(string(out), "SOURCE") ||
		!strings.Contains(string(out), "undeliverable=2") || !strings.Contains(string(out), "QUEUED is what is still to deliver") {
		t.Errorf("spool stats: %v\n%s", err, out)
	}

	fixed := filepath.Join(dir, "fixed.yaml")
	writeConfig(t, fixed, strings.Replace(base, `"MSH-9.1 in ORU"`, `"MSH-9.1 in ORU,ADT"`, 1))
	if out, err := exec.Command(binPath, "config", "apply", "--config", cfg, "--grace", "1s", "--wait", fixed).CombinedOutput(); err != nil {
		t.Fatalf("config apply: %v\n%s", err, out)
	}
	out, err := exec.Command(binPath, "spool", "undeliverable", "retry", "--config", cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"queued":1`) || !strings.Contains(string(out), `"unmatched":1`) {
		t.Fatalf("spool undeliverable retry: %v, want 1 queued and 1 unmatched\n%s", err, out)
	}
	waitFor(t, "the ADT in the archive under its GUID", func() bool {
		c := readArchive(t, filepath.Join(dir, "out"))["U1"]
		return len(c) == 1 && c[0].GUID == us[0].GUID
	})
	if out, err := exec.Command(binPath, "spool", "undeliverable", "purge", "--config", cfg, "--guid", us[1].GUID).CombinedOutput(); err != nil || !strings.Contains(string(out), `"purged":1`) {
		t.Fatalf("spool undeliverable purge --guid: %v\n%s", err, out)
	}
	if us := list(); len(us) != 0 {
		t.Errorf("undeliverable after retry and purge: %+v", us)
	}
}
