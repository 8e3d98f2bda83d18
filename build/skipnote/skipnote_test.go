package skipnote

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMissingSkipsAndNotes: the test is skipped, and the summary file gets
// one line naming the package, the part, the tool and the install command.
func TestMissingSkipsAndNotes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "skips")
	t.Setenv(Env, path)
	skipped := false
	t.Run("needs-mosquitto", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		Missing(t, "tests against Mosquitto", "mosquitto", "mosquitto")
		t.Error("Missing returned instead of skipping")
	})
	if !skipped {
		t.Fatal("the subtest was not skipped")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "SKIPPED build/skipnote: tests against Mosquitto: not installed: mosquitto; to run it: sudo apt-get install mosquitto\n"
	if string(b) != want {
		t.Errorf("summary file holds %q, want %q", b, want)
	}
}

// TestMissingWithoutSummaryOnlySkips: outside make test nothing is written.
func TestMissingWithoutSummaryOnlySkips(t *testing.T) {
	t.Setenv(Env, "")
	dir := t.TempDir()
	t.Chdir(dir)
	t.Run("skip", func(t *testing.T) { Missing(t, "x", "tool", "pkg") })
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 || !strings.HasPrefix(pkgDir(), "/") {
		t.Errorf("wrote %d files; pkgDir outside a module %q should be the absolute directory", len(entries), pkgDir())
	}
}

// TestUnmetSkipsAndNotes: a need that is not a package (root) is skipped
// and noted the same way, with what to do instead of an apt-get line.
func TestUnmetSkipsAndNotes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "skips")
	t.Setenv(Env, path)
	skipped := false
	t.Run("needs-root", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		Unmet(t, "the card-wear measurement", "it needs root", "run it as root")
		t.Error("Unmet returned instead of skipping")
	})
	if !skipped {
		t.Fatal("the subtest was not skipped")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "SKIPPED build/skipnote: the card-wear measurement: it needs root; to run it: run it as root\n"
	if string(b) != want {
		t.Errorf("summary file holds %q, want %q", b, want)
	}
}
