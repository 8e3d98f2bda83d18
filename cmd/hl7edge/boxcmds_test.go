package main

import (
	"bufio"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestLocalBoxCommands: what a technician does at the box works without
// MQTT: pause, resume, reping and identify by name, and the daemon's log
// by level and component, followed as it grows (issue 28, point 5).
func TestLocalBoxCommands(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	cfg := filepath.Join(dir, "hl7edge.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`device: {id: box-gw, board: sim}
spool: {dir: %[1]s/spool}
admin: {socket: %[1]s/admin.sock}
log: {level: debug}
sources:
  - {name: lab, type: mllp, listen: "127.0.0.1:%[2]d"}
destinations:
  - {name: tests-bin, type: rubbish, match: {any: ["MSH-11.1 in T"]}}
  - {name: archive, type: file, dir: %[1]s/out, match: {all: ["MSH-9.1 in ORU"]}}
`, dir, port))
	d := startDaemon(t, cfg, filepath.Join(dir, "admin.sock"), fmt.Sprintf("127.0.0.1:%d", port))
	defer d.stop()
	run := func(args ...string) (string, error) {
		out, err := exec.Command(binPath, append(args[:1:1], append([]string{"--config", cfg}, args[1:]...)...)...).CombinedOutput()
		return string(out), err
	}
	state := func() health.State {
		r, _ := runStatus(t, cfg)
		c, _ := r.Health.Component(health.Destination, "archive")
		return c.State
	}
	if out, err := run("pause", "archive"); err != nil || state() != health.Paused {
		t.Fatalf("pause archive: %v, state %s\n%s", err, state(), out)
	}
	// Flags after the name work too, as people type them.
	if out, err := exec.Command(binPath, "resume", "archive", "--config", cfg).CombinedOutput(); err != nil || state() != health.Up {
		t.Fatalf("resume archive: %v, state %s\n%s", err, state(), out)
	}
	if out, err := run("reping", "archive"); err == nil || !strings.Contains(out, "web-service") {
		t.Errorf("reping of a file destination: %v, want a refusal naming web-service destinations\n%s", err, out)
	}
	if out, err := run("pause", "nosuch"); err == nil || !strings.Contains(out, "nosuch") {
		t.Errorf("pause of an unknown name: %v\n%s", err, out)
	}
	if out, err := run("pause", "tests-bin"); err == nil || !strings.Contains(out, "is a rubbish bin") {
		t.Errorf("pause of a rubbish bin: %v, want it called a rubbish bin, not unknown\n%s", err, out)
	}
	if out, err := run("identify", "--seconds", "2"); err != nil || !strings.Contains(out, "blinking") {
		t.Errorf("identify: %v\n%s", err, out)
	}

	out, err := run("logs", "--level", "info", "--lines", "1000")
	if err != nil || !strings.Contains(out, "hl7edge started") || strings.Contains(out, "level=DEBUG") {
		t.Errorf("logs --level info: %v, want the start line and no DEBUG\n%s", err, out)
	}
	out, err = run("logs", "--component", "spool", "--lines", "1000")
	if err != nil || out == "" {
		t.Fatalf("logs --component spool: %v\n%s", err, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.Contains(l, "component=spool") {
			t.Errorf("logs --component spool printed a line of another component: %s", l)
		}
	}

	follow := exec.Command(binPath, "logs", "--config", cfg, "--follow", "--level", "warn")
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = follow.Process.Kill(); _ = follow.Wait() }()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	msg := filepath.Join(dir, "adt.hl7")
	writeConfig(t, msg, "MSH|^~\\&|HIS|H|GW|H|20261207||ADT^A01|FOLLOW1|P|2.5\rPID|1||P1\r")
	// The follower may not have read the log yet; send until it shows.
	deadline := time.After(30 * time.Second)
	for seen := false; !seen; {
		if out, err := exec.Command(binPath, "send", "--to", fmt.Sprintf("127.0.0.1:%d", port), msg).CombinedOutput(); err != nil {
			t.Fatalf("send: %v\n%s", err, out)
		}
		for wait := time.After(2 * time.Second); !seen; {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("logs --follow ended by itself")
				}
				if strings.Contains(l, "level=DEBUG") || strings.Contains(l, "level=INFO") {
					t.Errorf("logs --follow --level warn printed %s", l)
				}
				seen = strings.Contains(l, "FOLLOW1")
			case <-wait:
				wait = nil
			case <-deadline:
				t.Fatal("logs --follow did not show the undeliverable message's WARN line within 30s")
			}
			if wait == nil {
				break
			}
		}
	}
	_ = follow.Process.Signal(syscall.SIGINT)
	if err := follow.Wait(); err != nil {
		t.Errorf("logs --follow after SIGINT: %v, want exit 0", err)
	}
}

// TestFreshStateDirectory: a gateway whose spool's parent directory (its
// state directory: the MQTT session counter, firmware) does not exist yet
// starts, as it does without MQTT; it stopped with "mqtt session file: open
// .../mqtt.session.tmp-…: no such file or directory", found by
// build/operator-walk.
func TestFreshStateDirectory(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	broker := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	cfg := filepath.Join(dir, "hl7edge.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`device: {id: fresh-gw, board: sim}
spool: {dir: %[1]s/not/yet/spool}
admin: {socket: %[1]s/admin.sock}
sources:
  - {name: lab, type: mllp, listen: "127.0.0.1:%[2]d"}
destinations:
  - {name: archive, type: file, dir: %[1]s/out}
mqtt: {broker: %[3]q}
`, dir, port, broker.URL))
	d := startDaemon(t, cfg, filepath.Join(dir, "admin.sock"), fmt.Sprintf("127.0.0.1:%d", port))
	d.stop()
}
