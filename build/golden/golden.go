// Package golden compares what a command or screen prints with a file
// checked in under the test's testdata/, so that a reworded line or a broken
// table fails a test instead of passing a substring check. `go test -update`
// rewrites the files from what the code prints now; the diff is then
// reviewed like code.
package golden

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from what the code prints now")

// Check compares got with testdata/<name>.golden.
func Check(t testing.TB, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (write it with go test -run %s -update)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what the code prints (if the change is meant: go test -run '%s' -update):\n%s", path, t.Name(), diff(string(want), string(got)))
	}
}

// diff lists the lines that differ, numbered, as "-" (golden) and "+" (now).
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := range max(len(w), len(g)) {
		var a, c string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			c = g[i]
		}
		if a != c {
			b.WriteString("  line " + strconv.Itoa(i+1) + "\n    - " + a + "\n    + " + c + "\n")
		}
	}
	return b.String()
}
