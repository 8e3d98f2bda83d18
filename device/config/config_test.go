package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/device/atomicfile"
	"github.com/hl7edge/hl7edge/pipeline/webservice"
)

// TestOperationsExampleIsValid keeps the walk-through of docs/operations.md
// (its first yaml block) honest: the configuration shown to users must pass
// the same check the daemon runs.
func TestOperationsExampleIsValid(t *testing.T) {
	page, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindSubmatch(page)
	if m == nil {
		t.Fatal("docs/operations.md has no yaml block")
	}
	dir := t.TempDir()
	text := string(m[1])
	for _, f := range []string{"orders.pass", "ehr.pass", "mqtt.pass"} {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		text = strings.ReplaceAll(text, "/etc/hl7edge/"+f, p)
	}
	c, err := Parse([]byte(text))
	if err != nil {
		t.Fatalf("the configuration of docs/operations.md is refused:\n%v", err)
	}
	if len(c.Sources) != 3 || len(c.Destinations) != 4 || c.Device.ID != "ward3-gw" {
		t.Fatalf("parsed %d sources, %d destinations, device %q", len(c.Sources), len(c.Destinations), c.Device.ID)
	}
	if _, ok := c.Destinations[1].Config.(*webservice.DestinationConfig); !ok || c.Destinations[1].Match.All[0] != "MSH-9.1 in ADT,ORU" {
		t.Fatalf("ehr destination decoded as %+v", c.Destinations[1])
	}
}

func TestEveryMistakeNamedWithItsLine(t *testing.T) {
	bad := `device: {id: "bad/id", board: toaster}
spool: {dir: /tmp/x, max_bytes: 1MiB}
sources:
  - {name: mon, type: mllp, listen: 127.0.0.1:2575, max_conections: 5}
  - {name: mon, type: carrier-pigeon}
destinations:
  - {name: bin, type: rubbish}
  - {name: out, type: file, dir: /tmp/out, match: {all: ["PID-3 frobnicates x"]}}
`
	_, err := Parse([]byte(bad))
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	if strings.Contains(msg, "listen is empty") {
		t.Errorf("a misspelt key made its neighbour listen look missing:\n%s", msg)
	}
	for _, want := range []string{
		`device.id "bad/id"`, `device.board "toaster"`, "16MiB minimum",
		`line 4: sources[0].max_conections: unknown key "max_conections"`, `line 5: sources[1].type: source "mon": type "carrier-pigeon"`,
		`line 7: destinations[0]: rubbish bin "bin" has no match rules`, `line 8: destinations[1].match.all: destination "out": match`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
}

func TestDefaultsAndAtomicWrite(t *testing.T) {
	c, err := Parse([]byte("sources: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Device.Board != "sim" || c.Spool.Dir != "/var/lib/hl7edge/spool" || c.Admin.Socket == "" || c.Device.ID == "" {
		t.Fatalf("defaults not applied: %+v", c)
	}
	p := filepath.Join(t.TempDir(), "hl7edge.yaml")
	if err := atomicfile.Write(nil, p, []byte("a: 1\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(nil, p, []byte("b: 2\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	ents, _ := os.ReadDir(filepath.Dir(p))
	if string(b) != "b: 2\n" || len(ents) != 1 {
		t.Fatalf("file %q, %d entries (temporary files left?)", b, len(ents))
	}
}
