package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckNamesEveryMistake: each mistake alone gives exactly these
// messages, with line and key path; all of them in one file are all
// reported in one run.
func TestCheckNamesEveryMistake(t *testing.T) {
	dir := t.TempDir()
	pass := filepath.Join(dir, "ok.pass")
	if err := os.WriteFile(pass, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// head is a valid file up to the sources; each case adds its lines.
	head := fmt.Sprintf("device: {id: gw1, board: sim}\nspool:\n  dir: %s/spool\n", dir)
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"size unit", "  max_bytes: 12XB\n", []string{
			`line 4: spool.max_bytes: size "12XB": want a number with an optional unit such as 512KiB, 1MiB or 2GiB`}},
		{"size below minimum", "  max_bytes: 1MiB\n", []string{
			`line 4: spool.max_bytes 1MiB is below the 16MiB minimum: raise it (2GiB suits a 32 GB SD card)`}},
		{"duration", "sources:\n  - name: mon\n    type: mllp\n    listen: 127.0.0.1:2575\n    idle_timeout: 5 minutes\n", []string{
			`line 8: sources[0].idle_timeout: duration "5 minutes": want Go syntax such as 300ms, 30s, 5m or 1h`}},
		{"type", "sources:\n  - name: mon\n    type: mllp\n    listen: 127.0.0.1:2575\n    max_connections: many\n", []string{
			"line 8: sources[0].max_connections: cannot unmarshal !!str `many` into int"}},
		{"port out of range", "sources:\n  - name: mon\n    type: mllp\n    listen: \"127.0.0.1:99999\"\n", []string{
			`line 7: sources[0].listen: source "mon": mllp listener: listen "127.0.0.1:99999": port 99999 is not a number from 0 to 65535`}},
		{"unknown key", "sources:\n  - name: mon\n    type: mllp\n    listen: 127.0.0.1:2575\n    max_conections: 5\n", []string{
			`line 8: sources[0].max_conections: unknown key "max_conections" (known here: name, type, listen, max_connections, max_connections_per_peer, max_message_bytes, idle_timeout, first_frame_timeout, write_timeout, tls)`}},
		{"missing password_file of a destination",
			"destinations:\n  - name: ehr\n    type: webservice\n    url: https://ingest.example.org/hl7/ping\n    logon_id: gw\n    password_file: /nonexist\n", []string{
				`line 9: destinations[0].password_file: destination "ehr": password_file /nonexist does not exist: create it or correct the path`}},
		{"missing mqtt.password_file", "mqtt:\n  broker: tls://mqtt.example.org:8883\n  username: gw\n  password_file: /nonexist\n", []string{
			`line 7: mqtt.password_file: file /nonexist does not exist: create it or correct the path`}},
		{"mqtt value", fmt.Sprintf("mqtt:\n  broker: tls://mqtt.example.org:8883\n  username: gw\n  password_file: %s\n  health_interval: 100ms\n", pass), []string{
			`line 8: mqtt: mqtt.health_interval 100ms is below the minimum 1s; use e.g. 30s`}},
	}
	var all strings.Builder
	all.WriteString(head)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "hl7edge.yaml")
			if err := os.WriteFile(p, []byte(head+tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, ms := Check(p)
			var got []string
			for _, m := range ms {
				got = append(got, m.String())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
	// One file with a mistake in every block: a size, a duration and a
	// port in one source, a missing file in a destination and in mqtt.
	one := head + "  max_bytes: 12XB\n" +
		"sources:\n  - name: mon\n    type: mllp\n    listen: \"127.0.0.1:99999\"\n    idle_timeout: forever\n" +
		"destinations:\n  - name: ehr\n    type: webservice\n    url: https://ingest.example.org/hl7/ping\n    logon_id: gw\n    password_file: /nonexist\n    max_backoff: 1 hour\n" +
		"mqtt:\n  broker: tls://mqtt.example.org:8883\n  username: gw\n  password_file: /nonexist2\n"
	p := filepath.Join(t.TempDir(), "hl7edge.yaml")
	if err := os.WriteFile(p, []byte(one), 0o600); err != nil {
		t.Fatal(err)
	}
	_, ms := Check(p)
	want := []string{
		`line 4: spool.max_bytes: size "12XB"`,
		`line 8: sources[0].listen: source "mon": mllp listener: listen "127.0.0.1:99999": port 99999`,
		`line 9: sources[0].idle_timeout: duration "forever"`,
		`line 15: destinations[0].password_file: destination "ehr": password_file /nonexist does not exist`,
		`line 16: destinations[0].max_backoff: duration "1 hour"`,
		`line 20: mqtt.password_file: file /nonexist2 does not exist`,
	}
	if len(ms) != len(want) {
		t.Fatalf("%d mistakes, want %d:\n%v", len(ms), len(want), ms)
	}
	for i, w := range want {
		if !strings.HasPrefix(ms[i].String(), w) {
			t.Errorf("mistake %d: %q, want it to start %q", i, ms[i], w)
		}
	}
}

// TestServiceUserMustReadFiles: a file only root may read is refused for
// the service user, with the fix; one its group may read passes.
func TestServiceUserMustReadFiles(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to own a file the service user's uid does not")
	}
	// Not t.TempDir: its parent is 0700, which no other user can pass.
	dir, err := os.MkdirTemp("", "hl7edge-check-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "mqtt.pass")
	if err := os.WriteFile(f, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := reader{name: "hl7edge", uid: 64123, gids: []int{64123}}
	want := fmt.Sprintf("file %s (mode 0600) cannot be read by the hl7edge user: chown root:hl7edge and chmod 0640 it", f)
	if got := r.check(f); got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	if err := os.Chown(f, 0, 64123); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, 0o640); err != nil {
		t.Fatal(err)
	}
	if got := r.check(f); got != "" {
		t.Fatalf("group-readable file refused: %s", got)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if got := r.check(f); !strings.Contains(got, "does not let it through") {
		t.Fatalf("closed directory: %q", got)
	}
}
