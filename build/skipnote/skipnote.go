// Package skipnote skips a test whose tool is not installed and notes it
// for the summary at the end of `make test`. A skipped test passes, so
// without the note a machine without the optional tools would pass
// `make test` having run none of what needs them, and nobody would know.
package skipnote

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Env names the file the notes are appended to; the Makefile's test target
// sets it and prints the file at the end. Unset, Missing only skips.
const Env = "HL7EDGE_SKIPS"

// Missing skips t because tool is not installed. what says what is not
// run ("tests against Mosquitto"); debian is the Debian package that
// installs the tool. One line goes to the file $HL7EDGE_SKIPS names: the
// package under test, what, why, and the command that installs it.
func Missing(t testing.TB, what, tool, debian string) {
	t.Helper()
	why := "not installed: " + tool
	note(t, fmt.Sprintf("SKIPPED %s: %s: %s; to run it: sudo apt-get install %s", pkgDir(), what, why, debian))
	t.Skipf("%s: %s (Debian: apt-get install %s)", what, why, debian)
}

// Unmet skips t for a need other than a package (root, a device): why
// says what is missing, todo what to do about it. It is noted like Missing.
func Unmet(t testing.TB, what, why, todo string) {
	t.Helper()
	note(t, fmt.Sprintf("SKIPPED %s: %s: %s; to run it: %s", pkgDir(), what, why, todo))
	t.Skipf("%s: %s (%s)", what, why, todo)
}

// note appends line to the summary file. A note that cannot be written
// fails the test: a skip the summary does not show is what this package
// exists to prevent.
func note(t testing.TB, line string) {
	t.Helper()
	path := os.Getenv(Env)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err == nil {
		_, err = f.WriteString(line + "\n") // one write: lines of parallel packages do not mix
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		t.Fatalf("noting a skipped part in %s=%s: %v", Env, path, err)
	}
}

// pkgDir is the directory of the package under test relative to the
// module root (go test runs a package's tests in its directory), or the
// directory itself when no go.mod is found above it.
func pkgDir() string {
	wd, err := os.Getwd()
	if err != nil {
		return "?"
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			rel, err := filepath.Rel(dir, wd)
			if err != nil {
				return wd
			}
			return filepath.ToSlash(rel)
		}
		if filepath.Dir(dir) == dir {
			return wd
		}
	}
}
