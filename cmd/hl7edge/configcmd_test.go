package main

import (
	"bytes"
	"context"
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
	if _, errOut, code := run("carrier-pigeon"); code != 1 || !strings.Contains(errOut, `no source or destination type "carrier-pigeon"`) {
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
