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
