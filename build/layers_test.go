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

// layers are the repository's folders from the bottom up. A package may
// import packages of its own folder and of any folder on a lower layer,
// nothing above: that is what lets a reader take storage/ or pipeline/
// alone, and lets the appliance be replaced without touching the data path.
// The rule follows folders, so a new package is placed by where it is put,
// not by a list someone has to remember.
//
//   - storage and board stand on nothing of the project: the spool and the
//     hardware (board/led is the LED vocabulary its drivers share); so do
//     the test helpers any test may use (build/golden, build/skipnote,
//     build/freeport);
//   - pipeline/vocab is the data path's shared vocabulary (flow contracts,
//     units, back-off, rate-limited logs, health and its names);
//   - pipeline is the data path;
//   - device is the appliance; cmd and build are the top.
var layers = []struct {
	folders []string
	level   int
}{
	{[]string{"storage", "board", "build/golden", "build/skipnote", "build/freeport"}, 0},
	{[]string{"pipeline/vocab"}, 1},
	{[]string{"pipeline"}, 2},
	{[]string{"device"}, 3},
	{[]string{"cmd", "build"}, 4},
}

// layerOf is the level of the deepest folder in layers that holds pkg.
func layerOf(pkg string) (level int, folder string) {
	level, best := 4, ""
	for _, l := range layers {
		for _, f := range l.folders {
			if (pkg == f || strings.HasPrefix(pkg, f+"/")) && len(f) > len(best) {
				level, best = l.level, f
			}
		}
	}
	return level, best
}

// layerRule says which project packages pkg may import: its own folder's
// and those on lower layers. storage and board, on the same layer, may not
// import each other.
func layerRule(pkg string) (allowed func(dep string) bool) {
	level, folder := layerOf(pkg)
	return func(dep string) bool {
		l, f := layerOf(dep)
		return l < level || f == folder
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
				t.Errorf("%s imports %s: that reaches across the layers (storage, board < pipeline/vocab < pipeline < device < cmd, build); move the shared part down (pipeline/vocab for the data path's words) instead", pkg, dep)
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
