package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/rollout"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/device/trust/minisigntest"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
)

// daemonConfig is one real gateway's configuration for the rollout test.
func daemonConfig(dir, id, broker, pub, caFile string, mllp, closed int) string {
	return fmt.Sprintf(`device: {id: %s, board: sim, labels: {site: north%s}}
spool: {dir: %s}
admin: {socket: %s}
sources:
  - {name: in, type: mllp, listen: "127.0.0.1:%d"}
destinations:
  - {name: archive, type: file, dir: %s}
  - {name: lis, type: mllp, address: "127.0.0.1:%d"}
mqtt: {broker: "%s", health_interval: 1s}
trust:
  keys: [%s]
firmware:
  dir: %s
  ca_file: %s
  trial: 6s
`, id, map[bool]string{true: ", ring: canary"}[id == "gw-1"], filepath.Join(dir, "state", "spool"), filepath.Join(dir, "admin.sock"), mllp,
		filepath.Join(dir, "archive"), closed, broker, pub, filepath.Join(dir, "state", "firmware"), caFile)
}

// TestRolloutRealDaemons is issue 29's first must-show with real daemons:
// three gateways (the installed build, "dev") on a real broker, each under
// a supervisor that restarts it like Restart=always, are updated in three
// waves to a second build (2.0.0-test) served over HTTPS. On gw-2 (wave 2)
// the image starts unhealthy (its MLLP port is taken), so it rolls back by
// itself: the rollout stops after wave 2 naming gw-2 and the reason, gw-3
// gets nothing; after the port is freed, --resume updates gw-3.
func TestRolloutRealDaemons(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a second binary and runs three daemons")
	}
	key := minisigntest.NewKey(t)
	dir := t.TempDir()
	v2 := filepath.Join(dir, "v2", "hl7edge")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=2.0.0-test", "-o", v2, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build v2: %v\n%s", err, out)
	}
	ca, err := throwawayca.NewCA("rollout test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("127.0.0.1", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	srvDir := filepath.Join(dir, "srv")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil || os.MkdirAll(srvDir, 0o755) != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.FileServer(http.Dir(srvDir)))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})

	// gw-2's unhealthy configuration listens where the test already does.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	var sickCfg string
	for _, id := range []string{"gw-1", "gw-2", "gw-3"} {
		d := filepath.Join(dir, id)
		if err := os.MkdirAll(filepath.Join(d, "state"), 0o750); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(d, "hl7edge.yaml")
		closed := freePort(t)
		if err := os.WriteFile(cfg, []byte(daemonConfig(d, id, b.URL, key.Pub, caFile, freePort(t), closed)), 0o640); err != nil {
			t.Fatal(err)
		}
		if id == "gw-2" {
			sickCfg = filepath.Join(d, "unhealthy.yaml")
			text := daemonConfig(d, id, b.URL, key.Pub, caFile, held.Addr().(*net.TCPAddr).Port, closed)
			if err := os.WriteFile(sickCfg, []byte(text), 0o640); err != nil {
				t.Fatal(err)
			}
		}
		startSupervisor(t, cfg)
	}
	// One image for every box; on gw-2 it starts with the configuration
	// whose MLLP port is taken.
	img := filepath.Join(srvDir, "hl7edge-2.0")
	script := fmt.Sprintf("#!/bin/sh\ncase \"$*\" in *gw-2/hl7edge.yaml*) exec %s run --config %s;; esac\nexec %s \"$@\"\n", v2, sickCfg, v2)
	if err := os.WriteFile(img, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	key.SignFile(t, img, false)
	for _, id := range []string{"gw-1", "gw-2", "gw-3"} {
		b.Log.WaitFor(t, 0, id+" online", mqtttest.JSONHas("hl7edge/"+id+"/status", map[string]any{"state": "online", "version": "dev"}))
		b.Log.WaitFor(t, 0, id+" health", mqtttest.JSONHas("hl7edge/"+id+"/health", map[string]any{"device": id}))
	}

	state := filepath.Join(dir, "rollout.json")
	out, stderr, code := runCLI(t, "fleet", "update", "--broker", b.URL, "--image", img, "--version", "2.0.0-test", "--url", srv.URL+"/hl7edge-2.0",
		"--key", key.SecFile, "--select", "site=north", "--waves", "1,2,3", "--max-failures", "0", "--deadline", "3m", "--state", state)
	t.Logf("rollout:\n%s%s", out, stderr)
	if code != 1 || !strings.Contains(out, "stopped after wave 2 of 3") || !strings.Contains(out, "gw-2 (wave 2): rolled_back:") || !strings.Contains(out, "source in is not up") {
		t.Fatalf("exit %d; want a stop after wave 2 naming gw-2 and the source that was not up", code)
	}
	if ids := sentIDs(t, b); len(ids["gw-3"]) != 0 || len(ids["gw-1"]) != 1 || len(ids["gw-2"]) != 1 {
		t.Fatalf("sent %v; want gw-1 and gw-2 once, gw-3 untouched", ids)
	}
	held.Close()
	out, stderr, code = runCLI(t, "fleet", "update", "--broker", b.URL, "--key", key.SecFile, "--resume", state)
	t.Logf("resume:\n%s%s", out, stderr)
	if code != 0 || !strings.Contains(out, "wave 3/3") {
		t.Fatalf("--resume: exit %d; want wave 3 done", code)
	}
	st, err := rollout.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	checkState(t, st, map[string]string{"gw-1": rollout.Committed, "gw-2": rollout.Failed, "gw-3": rollout.Committed})
	b.Log.WaitFor(t, 0, "gw-3 on 2.0.0-test", mqtttest.JSONHas("hl7edge/gw-3/status", map[string]any{"state": "online", "version": "2.0.0-test"}))
}
