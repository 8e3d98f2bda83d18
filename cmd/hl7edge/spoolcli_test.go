package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/mllp"
)

// The destination is a closed port, so messages stay queued and max_attempts
// makes dead letters quickly.
const spoolCLIConfig = `device: {id: cli-gw, board: sim}
spool: {dir: %[1]s/spool, max_bytes: 64MiB}
admin: {socket: %[1]s/admin.sock}
sources:
  - {name: mllp-in, type: mllp, listen: "127.0.0.1:%[2]d"}
destinations:
  - {name: lis, type: mllp, address: "127.0.0.1:1", max_attempts: 1, max_backoff: 1s}
  - {name: hold, type: mllp, address: "127.0.0.1:1", max_backoff: 1h}
`

// TestSpoolCLI: `spool stats --json` and `spool dead` answer the same
// through the running daemon and, once it is stopped, from the spool itself.
func TestSpoolCLI(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	cfgPath := filepath.Join(dir, "hl7edge.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, spoolCLIConfig, dir, port), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	d := startDaemon(t, cfgPath, filepath.Join(dir, "admin.sock"), addr)
	c, err := mllp.Dial(context.Background(), addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Send(context.Background(), fmt.Appendf(nil, "MSH|^~\\&|A|B|C|D|20261122||ADT^A01|CLI%d|P|2.5.1\r", i)); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	stats := func() map[string]any {
		out, err := exec.Command(binPath, "spool", "stats", "--config", cfgPath, "--json").Output()
		if err != nil {
			t.Fatalf("spool stats: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("spool stats --json printed %q", out)
		}
		return m
	}
	queued := func(m map[string]any, dest, key string) float64 {
		return m["destinations"].(map[string]any)[dest].(map[string]any)[key].(float64)
	}
	deadJSON := func() string {
		out, err := exec.Command(binPath, "spool", "dead", "list", "--config", cfgPath, "--destination", "lis", "--json").Output()
		if err != nil {
			t.Fatalf("dead list --json: %v", err)
		}
		return string(out)
	}
	// lis gives up after one attempt per message: all three become dead letters.
	var live map[string]any
	for {
		m := stats()
		if queued(m, "lis", "dead") == 3 {
			if queued(m, "hold", "queued") != 3 || m["sources"] == nil {
				t.Fatalf("running daemon's stats: %v", m)
			}
			live = m
			break
		}
	}
	liveDead := deadJSON()
	d.stop()
	m := stats()
	if queued(m, "lis", "dead") != 3 || queued(m, "hold", "queued") != 3 || m["messages"].(float64) != 3 {
		t.Fatalf("stopped daemon's stats: %v", m)
	}
	// The same handlers answer with the daemon stopped: the same shape,
	// sources included (stopped, as nothing runs), and the same dead letters.
	if got, want := jsonShape(m), jsonShape(live); got != want {
		t.Errorf("stats from the stopped spool have shape\n  %s\nthe running daemon's\n  %s", got, want)
	}
	if src, ok := m["sources"].(map[string]any)["mllp-in"].(map[string]any); !ok || src["state"] != "stopped" {
		t.Errorf("stopped daemon's stats: sources %v, want mllp-in stopped", m["sources"])
	}
	if got := deadJSON(); got != liveDead {
		t.Errorf("dead list --json from the stopped spool\n  %s\nfrom the running daemon\n  %s", got, liveDead)
	}
	out, err := exec.Command(binPath, "spool", "dead", "list", "--config", cfgPath, "--destination", "lis").CombinedOutput()
	if err != nil || !containsAll(string(out), "CLI0", "CLI1", "CLI2", "max_attempts") {
		t.Fatalf("dead list: %v\n%s", err, out)
	}
	out, err = exec.Command(binPath, "spool", "dead", "purge", "--config", cfgPath, "--destination", "lis").CombinedOutput()
	if err != nil || string(out) != "{\"purged\":3}\n" {
		t.Fatalf("dead purge: %v %s", err, out)
	}
	if m := stats(); queued(m, "lis", "dead") != 0 {
		t.Fatalf("after purge: %v", m)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// jsonShape is the sorted list of the object's key paths, with map keys
// that name things (destinations, sources) folded to "*" and counters left
// out (the running daemon's sources have them, stopped ones do not).
func jsonShape(m map[string]any) string {
	var paths []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		o, ok := v.(map[string]any)
		if !ok {
			return
		}
		for k, child := range o {
			p := prefix + "." + k
			switch prefix {
			case ".destinations", ".sources":
				p = prefix + ".*"
			}
			if k == "counters" {
				continue // a stopped source has none
			}
			paths = append(paths, p)
			walk(p, child)
		}
	}
	walk("", m)
	slices.Sort(paths)
	return strings.Join(slices.Compact(paths), " ")
}
