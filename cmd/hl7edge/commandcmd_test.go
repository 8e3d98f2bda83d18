package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/device/trust/minisigntest"
)

// TestCommandSign: `hl7edge command sign` with a key the stock minisign
// tool made prints an envelope the gateway's gate opens, whose inner bytes
// the stock tool verifies, valid for the named device only.
func TestCommandSign(t *testing.T) {
	k := minisigntest.NewKey(t)
	var out, errOut bytes.Buffer
	code := dispatch(context.Background(), []string{"command", "sign", "--key", k.SecFile, "--device", "gw-7", "--id", "op-1",
		"config-apply", `{"yaml":"device: {id: gw-7}\n"}`}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	keys, err := trust.ParseKeys([]string{k.Pub})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	req, signer, err := trust.NewGate(keys, "gw-7", filepath.Join(dir, "ids"), nil, nil).Open(bytes.TrimSpace(out.Bytes()))
	if err != nil || req.ID != "op-1" || req.Name != "config-apply" || !strings.Contains(string(req.Args), "gw-7") || signer != keys.IDs()[0] {
		t.Fatalf("Open = %+v %q %v", req, signer, err)
	}
	if _, _, err := trust.NewGate(keys, "gw-8", filepath.Join(dir, "ids8"), nil, nil).Open(bytes.TrimSpace(out.Bytes())); err == nil {
		t.Errorf("a command signed for gw-7 opened on gw-8")
	}
	var env trust.Envelope
	if err := json.Unmarshal(out.Bytes(), &env); err != nil {
		t.Fatal(err)
	}
	inner, _ := base64.StdEncoding.DecodeString(env.Signed)
	f := filepath.Join(dir, "inner.json")
	if err := os.WriteFile(f, inner, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f+".minisig", []byte(env.Minisig), 0o600); err != nil {
		t.Fatal(err)
	}
	if !k.VerifyFile(t, f) {
		t.Errorf("the stock minisign tool refuses the signature hl7edge command sign made")
	}
	for _, bad := range [][]string{
		{"command", "sign", "--key", k.SecFile, "health"},
		{"command", "sign", "--key", k.SecFile, "--device", "gw-7", "health", "[1]"},
		{"command", "sign", "--key", k.SecFile, "--device", "gw-7", "--expires", "200h", "health"},
	} {
		if code := dispatch(context.Background(), bad, &out, &errOut); code == 0 {
			t.Errorf("%v: exit 0, want a refusal", bad)
		}
	}
}

// TestFirmwareArgs: `hl7edge firmware args` turns an image signed with the
// stock minisign tool into firmware-update arguments whose sha256 and
// signature the gateway's checks accept.
func TestFirmwareArgs(t *testing.T) {
	k := minisigntest.NewKey(t)
	img := filepath.Join(t.TempDir(), "hl7edge-arm64")
	data := []byte("an image")
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := dispatch(context.Background(), []string{"firmware", "args", "--url", "https://u.example/x", "--version", "1.4.0", img}, &out, &errOut); code == 0 {
		t.Fatalf("firmware args without a .minisig succeeded: %s", out.String())
	}
	k.SignFile(t, img, false)
	out.Reset()
	if code := dispatch(context.Background(), []string{"firmware", "args", "--url", "https://u.example/x", "--version", "1.4.0", img}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var a struct{ URL, Version, SHA256, Minisig string }
	if err := json.Unmarshal(out.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	keys, _ := trust.ParseKeys([]string{k.Pub})
	if _, _, err := keys.Verify(data, a.Minisig); err != nil || a.SHA256 != sha256Hex(data) || a.Version != "1.4.0" || a.URL != "https://u.example/x" {
		t.Errorf("args %+v: %v", a, err)
	}
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
