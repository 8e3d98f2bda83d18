package build

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/hl7edge/hl7edge/"

// vocabulary is the shared bottom layer: small packages of names and
// contracts that every layer may use and that use nothing of the project
// but each other.
var vocabulary = []string{
	"pipeline/flow",
	"pipeline/units",
	"pipeline/backoff",
	"pipeline/ratelog",
	"pipeline/health",
	"board/led",
}

// layerRule says which project packages a package may import. The layers,
// bottom up: vocabulary; storage and board (hardware) on it; pipeline on
// storage; device (the appliance) on everything below; cmd wires it all.
// Nothing below device may reach up into it: that is what lets a reader
// take pipeline/ or storage/ alone, and lets the appliance be replaced
// without touching the data path.
func layerRule(pkg string) (allowed func(dep string) bool) {
	isVocab := func(dep string) bool {
		for _, v := range vocabulary {
			if dep == v {
				return true
			}
		}
		return false
	}
	under := func(dep, dir string) bool { return dep == dir || strings.HasPrefix(dep, dir+"/") }
	switch {
	case isVocab(pkg):
		return isVocab
	case under(pkg, "storage"):
		return func(dep string) bool { return isVocab(dep) || under(dep, "storage") }
	case under(pkg, "board"):
		return func(dep string) bool { return isVocab(dep) || under(dep, "board") }
	case under(pkg, "pipeline"):
		return func(dep string) bool { return isVocab(dep) || under(dep, "pipeline") || under(dep, "storage") }
	case under(pkg, "device"):
		return func(dep string) bool { return !under(dep, "cmd") }
	default: // cmd, build: the top
		return func(string) bool { return true }
	}
}

// TestLayers fails when a package's shipped code imports across the layers
// (like Tailscale's deptest). Tests may reach up (a board's test drives it
// through the LED engine), so only non-test imports are checked.
func TestLayers(t *testing.T) {
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", "./...")
	cmd.Dir = ".."
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(out)
	checked := 0
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkg := strings.TrimPrefix(p.ImportPath, module)
		allowed := layerRule(pkg)
		for _, imp := range p.Imports {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if !allowed(dep) {
				t.Errorf("%s imports %s: that reaches across the layers (vocabulary < storage, board < pipeline < device < cmd); move the shared part down into the vocabulary (%s) instead", pkg, dep, strings.Join(vocabulary, ", "))
			}
		}
		checked++
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	if checked < 20 {
		t.Fatalf("go list listed %d packages; the layer check needs the whole module", checked)
	}
}
