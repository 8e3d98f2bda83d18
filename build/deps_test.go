package build

import (
	"flag"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the checked-in lists from what the code has now")

// depsFile lists every package the firmware links, as `go list -deps` of
// cmd/hl7edge sees them for the arm64 gateway. A new import can pull in a
// dependency, and with it binary size and attack surface, without anyone
// deciding to: this list makes every such change a reviewed line.
const depsFile = "firmware-deps.txt"

func firmwareDeps(t *testing.T) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if .Standard}}std {{end}}{{.ImportPath}}", "./cmd/hl7edge")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/hl7edge: %v", err)
	}
	var deps []string
	for l := range strings.Lines(string(out)) {
		l = strings.TrimSpace(l)
		// The standard library's own internals follow the Go release, not
		// our imports.
		name, std := strings.CutPrefix(l, "std ")
		if l == "" || std && (strings.HasPrefix(name, "internal/") || strings.HasPrefix(name, "vendor/") || strings.Contains(name, "/internal/")) {
			continue
		}
		deps = append(deps, l)
	}
	slices.Sort(deps)
	return deps
}

// TestFirmwareDependencies fails, naming them, when the firmware links a
// package the checked-in list does not have, or no longer links one it has.
// After a deliberate change: go test ./build/ -run TestFirmwareDependencies -update
func TestFirmwareDependencies(t *testing.T) {
	got := firmwareDeps(t)
	if *update {
		if err := os.WriteFile(depsFile, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(depsFile)
	if err != nil {
		t.Fatalf("%v (write it with -update)", err)
	}
	var want []string
	for l := range strings.Lines(string(b)) {
		if l = strings.TrimSpace(l); l != "" {
			want = append(want, l)
		}
	}
	var added, gone []string
	for _, d := range got {
		if !slices.Contains(want, d) {
			added = append(added, d)
		}
	}
	for _, d := range want {
		if !slices.Contains(got, d) {
			gone = append(gone, d)
		}
	}
	if len(added)+len(gone) > 0 {
		t.Errorf("the firmware's dependencies changed (build/%s).\nnew: %q\ngone: %q\nIf that is meant, say why in the commit and run: go test ./build/ -run TestFirmwareDependencies -update",
			depsFile, added, gone)
	}
}
