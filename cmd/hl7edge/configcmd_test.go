package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigSample: the samples compiled into the binary are printed as
// they are in the tree, each once, and the list names every type.
func TestConfigSample(t *testing.T) {
	run := func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := dispatch(context.Background(), append([]string{"config", "sample"}, args...), &out, &errOut)
		return out.String(), errOut.String(), code
	}
	out, _, code := run()
	if code != 0 || !strings.Contains(out, "source types:      mllp, serial, webservice") ||
		!strings.Contains(out, "destination types: file, mllp, rubbish, serial, webservice") {
		t.Errorf("config sample: %d\n%s", code, out)
	}
	for typ, file := range map[string]string{
		"mllp": "pipeline/mllp/sample.yaml", "file": "pipeline/fileout/sample.yaml", "rubbish": "pipeline/route/sample.yaml",
	} {
		want, err := os.ReadFile(filepath.Join("..", "..", file))
		if err != nil {
			t.Fatal(err)
		}
		// mllp is a source and a destination with one sample: printed once.
		if out, _, code := run(typ); code != 0 || out != string(want) {
			t.Errorf("config sample %s: exit %d, printed something other than %s:\n%s", typ, code, file, out)
		}
	}
	if _, errOut, code := run("carrier-pigeon"); code != 1 || !strings.Contains(errOut, `no section or type "carrier-pigeon"`) {
		t.Errorf("config sample carrier-pigeon: exit %d, %s", code, errOut)
	}
}

// TestConfigCheckOneMistake: one mistake is "1 mistake", and an
// indentation mistake is reported at its own line with what to do
// (issue 28, points 8 and 10).
func TestConfigCheckOneMistake(t *testing.T) {
	f := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(f, []byte("device: {board: sim}\nsources:\n- name: lab\n  type: mllp\n  listen: \"127.0.0.1:2575\"\n - name: lab2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := dispatch(context.Background(), []string{"config", "check", f}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), ": 1 mistake\n") || !strings.Contains(out.String(), "line 6: indentation") {
		t.Errorf("config check: exit %d\n%s%s", code, out.String(), errOut.String())
	}
}

// TestConfigSampleEverySection: every block of the file has a sample
// (`config sample mqtt` was "no such type"), and `config sample all`
// prints every block's and every type's (issue 28, point 8).
func TestConfigSampleEverySection(t *testing.T) {
	run := func(args ...string) (string, int) {
		var out, errOut bytes.Buffer
		code := dispatch(context.Background(), append([]string{"config", "sample"}, args...), &out, &errOut)
		return out.String() + errOut.String(), code
	}
	for section, file := range map[string]string{
		"spool": "storage/sample.yaml", "mqtt": "device/mqttagent/sample.yaml", "leds": "board/sample.yaml",
		"board": "board/sample.yaml", "log": "device/samples/device.yaml", "trust": "device/samples/trust.yaml",
		"firmware": "device/samples/firmware.yaml",
	} {
		want, err := os.ReadFile(filepath.Join("..", "..", file))
		if err != nil {
			t.Fatal(err)
		}
		if out, code := run(section); code != 0 || out != string(want) {
			t.Errorf("config sample %s: exit %d, printed something other than %s:\n%s", section, code, file, out)
		}
	}
	all, code := run("all")
	for _, part := range []string{"spool:", "mqtt:", "leds:", "trust:", "firmware:", "log:", "type: mllp", "type: webservice", "type: serial", "type: file", "type: rubbish"} {
		if code != 0 || !strings.Contains(all, part) {
			t.Errorf("config sample all (exit %d) lacks %q", code, part)
		}
	}
	if out, _ := run(); !strings.Contains(out, "sections:") || !strings.Contains(out, "firmware") {
		t.Errorf("config sample lists no sections:\n%s", out)
	}
}

// TestConfigCheckSaysWhatSIMeans: sizes are documented in IEC units (MiB);
// an SI unit is accepted, and config check says what it means, since
// 64MB and 64MiB differ by 3 MiB (issue 28, point 8).
func TestConfigCheckSaysWhatSIMeans(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "si.yaml")
	if err := os.WriteFile(f, fmt.Appendf(nil, `device: {id: si-gw, board: sim}
spool: {dir: %[1]s/spool, max_bytes: 64MB}
sources:
  - {name: lab, type: mllp, listen: "127.0.0.1:2575", max_message_bytes: "2M"}
destinations:
  - {name: archive, type: file, dir: %[1]s/out}
`, dir), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := dispatch(context.Background(), []string{"config", "check", f}, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "line 2: max_bytes: 64MB is 64,000,000 bytes (SI") ||
		!strings.Contains(out.String(), "64MiB") || !strings.Contains(out.String(), "line 4: max_message_bytes: 2M is read as 2MiB") {
		t.Errorf("config check: exit %d\n%s%s", code, out.String(), errOut.String())
	}
}

// TestSpoolMissingActionWord: `spool dead --config F` lacks its action
// word; it said so about /etc/hl7edge/hl7edge.yaml, having taken --config
// for the action and F for nothing (issue 28, point 10).
func TestSpoolMissingActionWord(t *testing.T) {
	for _, sub := range []string{"dead", "undeliverable"} {
		var out, errOut bytes.Buffer
		code := dispatch(context.Background(), []string{"spool", sub, "--config", "/nonexistent/gw.yaml"}, &out, &errOut)
		if code == 0 || !strings.Contains(errOut.String(), "needs an action word") || strings.Contains(errOut.String(), "read configuration") {
			t.Errorf("spool %s --config F: exit %d\n%s", sub, code, errOut.String())
		}
	}
}

// TestConfigCheckOnReject: on_reject takes hold or dead, and a mistake says
// which and what each does.
func TestConfigCheckOnReject(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(f, fmt.Appendf(nil, `device: {id: r-gw, board: sim}
spool: {dir: %[1]s/spool}
sources:
  - {name: lab, type: mllp, listen: "127.0.0.1:2575"}
destinations:
  - {name: lis, type: mllp, address: "127.0.0.1:2576", on_reject: drop}
`, dir), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := dispatch(context.Background(), []string{"config", "check", f}, &out, &errOut)
	if code != 1 || !strings.Contains(out.String(), `line 6: destinations[0].on_reject: destination "lis": on_reject "drop": use hold`) || !strings.Contains(out.String(), "or dead") {
		t.Errorf("config check with on_reject: drop: exit %d\n%s%s", code, out.String(), errOut.String())
	}
}
