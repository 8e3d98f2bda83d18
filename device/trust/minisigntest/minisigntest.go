// Package minisigntest drives the stock minisign tool in tests, so that
// signatures an operator makes with it are what the gateway is tested
// against. Tests skip with a message when the tool is not installed (CI
// installs it: .ci/run).
package minisigntest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/build/skipnote"
)

// Tool returns the minisign binary's path or skips the test.
func Tool(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("minisign")
	if err != nil {
		skipnote.Missing(t, "signatures made by the stock minisign tool", "minisign", "minisign")
	}
	return p
}

// Key is a key pair made by `minisign -G -W` (unencrypted, so no prompt).
type Key struct {
	Pub     string // the public key line for trust.keys ("RW...")
	PubFile string
	SecFile string
}

// NewKey generates a key pair in a fresh directory.
func NewKey(t testing.TB) Key {
	t.Helper()
	tool := Tool(t)
	dir := t.TempDir()
	k := Key{PubFile: filepath.Join(dir, "minisign.pub"), SecFile: filepath.Join(dir, "minisign.key")}
	run(t, tool, "-G", "-W", "-p", k.PubFile, "-s", k.SecFile)
	b, err := os.ReadFile(k.PubFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	k.Pub = strings.TrimSpace(lines[len(lines)-1])
	return k
}

// SignFile signs file with the stock tool (prehashed, or the legacy format
// when legacy) and returns the signature text it wrote to file.minisig.
func (k Key) SignFile(t testing.TB, file string, legacy bool) string {
	t.Helper()
	args := []string{"-S", "-s", k.SecFile, "-t", "signed in a test", "-m", file}
	if legacy {
		args = append(args, "-l")
	}
	run(t, Tool(t), args...)
	b, err := os.ReadFile(file + ".minisig")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// SignBytes signs data with the stock tool.
func (k Key) SignBytes(t testing.TB, data []byte) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return k.SignFile(t, f, false)
}

// VerifyFile runs `minisign -V` on file and its .minisig; it reports
// whether the stock tool accepts the signature.
func (k Key) VerifyFile(t testing.TB, file string) bool {
	t.Helper()
	return exec.Command(Tool(t), "-V", "-q", "-p", k.PubFile, "-m", file).Run() == nil
}

func run(t testing.TB, tool string, args ...string) {
	t.Helper()
	cmd := exec.Command(tool, args...)
	cmd.Stdin = strings.NewReader("")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("minisign %v: %v\n%s", args, err, out)
	}
}
