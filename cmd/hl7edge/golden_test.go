package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/build/golden"
)

// `hl7edge help` is the one source of the command line's reference (the
// README points to it), pinned in testdata/help.golden.
func TestHelpGolden(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := dispatch(context.Background(), []string{"help"}, &out, &errOut); code != 0 {
		t.Fatalf("help: exit %d\n%s", code, errOut.String())
	}
	golden.Check(t, "help", out.Bytes())
}

// `config check`'s report of a file with several kinds of mistake, pinned
// in testdata/config-check.golden (the temporary directory reads $DIR).
func TestConfigCheckGolden(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "hl7edge.yaml")
	text := `device: {id: ward4-gw, board: sim}
spool: {dir: ` + dir + `/spool, max_bytes: 64MB}
sources:
  - {name: lab, type: mllp, listen: "127.0.0.1:2575", idle_timeout: 5 minutes}
  - {name: lab, type: serial, device: /dev/ttyUSB0}
  - {name: orders, type: webservce}
destinations:
  - {name: ehr, type: webservice, url: "http://ehr.example.org/ping", logon_id: gw, password_file: ` + dir + `/missing.pass}
  - {name: archive, type: file, dir: ` + dir + `/out, colour: blue}
`
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := dispatch(context.Background(), []string{"config", "check", f}, &out, &errOut)
	if code != 1 {
		t.Errorf("config check of a file with mistakes: exit %d, want 1", code)
	}
	report := strings.ReplaceAll(out.String()+errOut.String(), dir, "$DIR")
	golden.Check(t, "config-check", []byte(report))
}
