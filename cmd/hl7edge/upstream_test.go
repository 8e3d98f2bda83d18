package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/logtest"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
)

// TestWebserviceAndCheckUpstream runs the reference web service over real
// TLS and checks it with check-upstream: our two halves agree on the protocol.
func TestWebserviceAndCheckUpstream(t *testing.T) {
	dir := t.TempDir()
	ca, err := throwawayca.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("127.0.0.1", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	files, err := ca.WriteFiles(dir, "ws", leaf)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	ws := exec.Command(binPath, "webservice", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--store", filepath.Join(dir, "store"),
		"--tls-cert", files.Cert, "--tls-key", files.Key, "--logon", "gw-17", "--password-file", pw)
	wsOut := &logtest.Buffer{}
	ws.Stdout, ws.Stderr = wsOut, wsOut
	if err := ws.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ws.Process.Kill(); _ = ws.Wait() }()
	url := fmt.Sprintf("https://127.0.0.1:%d/hl7/ping", port)
	var out []byte
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err = exec.Command(binPath, "check-upstream", "--url", url, "--logon", "gw-17", "--password-file", pw, "--ca", files.CA).CombinedOutput()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("check-upstream against the reference service failed: %v\n%s\nservice log:\n%s", err, out, string(wsOut.Bytes()))
	}
	for _, want := range []string{"test post acknowledged", "repeated GUID acknowledged", "all checks passed"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if bytes.Contains(wsOut.Bytes(), []byte("s3cret-pass")) || bytes.Contains(out, []byte("s3cret-pass")) {
		t.Fatal("the password appears in output")
	}
	// Without the CA the same service must be refused: verification is on.
	out, err = exec.Command(binPath, "check-upstream", "--url", url, "--logon", "gw-17", "--password-file", pw).CombinedOutput()
	if err == nil {
		t.Fatalf("check-upstream trusted an unknown CA:\n%s", out)
	}
}
