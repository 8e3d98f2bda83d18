package trust_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/device/trust/minisigntest"
)

// TestStockMinisign: files signed by the stock tool verify, prehashed and
// legacy; a changed byte, a foreign key, a dropped trusted-comment line and
// an altered trusted comment are refused with the reason.
func TestStockMinisign(t *testing.T) {
	k := minisigntest.NewKey(t)
	other := minisigntest.NewKey(t)
	keys, err := trust.ParseKeys([]string{k.Pub})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "image")
	data := []byte("firmware image bytes\x00\x01\x02")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, legacy := range []bool{false, true} {
		sig := k.SignFile(t, file, legacy)
		wantAlg := "RU" // base64 of "ED": prehashed
		if legacy {
			wantAlg = "RW" // "Ed"
		}
		if l := strings.Split(sig, "\n")[1]; !strings.HasPrefix(l, wantAlg) {
			t.Fatalf("legacy=%v: the tool wrote %q, want a signature starting %s", legacy, l, wantAlg)
		}
		id, comment, err := keys.Verify(data, sig)
		if err != nil || comment != "signed in a test" || id != keys.IDs()[0] {
			t.Errorf("legacy=%v: Verify = %q %q %v; want key %s, the trusted comment, no error", legacy, id, comment, err, keys.IDs()[0])
		}
		bad := append([]byte{}, data...)
		bad[3] ^= 1
		if _, _, err := keys.Verify(bad, sig); !errors.Is(err, trust.ErrBadSig) {
			t.Errorf("legacy=%v: a changed byte: %v, want ErrBadSig", legacy, err)
		}
		// The global signature covers the trusted comment.
		lines := strings.Split(sig, "\n")
		lines[2] = "trusted comment: something else"
		if _, _, err := keys.Verify(data, strings.Join(lines, "\n")); !errors.Is(err, trust.ErrBadSig) {
			t.Errorf("legacy=%v: altered trusted comment: %v, want ErrBadSig", legacy, err)
		}
		if _, _, err := keys.Verify(data, strings.Join(lines[:2], "\n")); !errors.Is(err, trust.ErrNoSignature) {
			t.Errorf("legacy=%v: truncated signature: %v, want ErrNoSignature", legacy, err)
		}
	}
	sig := other.SignFile(t, file, false)
	if _, _, err := keys.Verify(data, sig); !errors.Is(err, trust.ErrForeignKey) || !strings.Contains(err.Error(), keys.IDs()[0]) {
		t.Errorf("foreign key: %v, want ErrForeignKey naming the trusted key", err)
	}
	if _, _, err := keys.Verify(data, ""); !errors.Is(err, trust.ErrNoSignature) {
		t.Errorf("empty signature: %v, want ErrNoSignature", err)
	}

	// What hl7edge signs, the stock tool verifies.
	s, pub, err := trust.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(dir, "ours.pub")
	if err := os.WriteFile(pubFile, []byte("untrusted comment: test\n"+pub+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file+".minisig", s.Sign(data, "made by hl7edge"), 0o600); err != nil {
		t.Fatal(err)
	}
	ours := minisigntest.Key{PubFile: pubFile}
	if !ours.VerifyFile(t, file) {
		t.Errorf("the stock minisign tool refuses a signature made by trust.Signer")
	}
}

func TestParseKeys(t *testing.T) {
	_, pub, err := trust.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	k, err := trust.ParseKeys([]string{pub, "untrusted comment: minisign public key\n" + pub})
	if err != nil || k.Len() != 2 {
		t.Fatalf("ParseKeys = %d keys, %v; want 2, nil", k.Len(), err)
	}
	_, err = trust.ParseKeys([]string{pub, "RWnotakey", ""})
	if err == nil || !strings.Contains(err.Error(), "trust.keys[1]") || !strings.Contains(err.Error(), "trust.keys[2]") {
		t.Errorf("bad keys: %v, want both named", err)
	}
}

// TestGate: the envelope checks, in the order an operator meets them, and
// a replay refused after the gate is rebuilt from its file (a restart).
func TestGate(t *testing.T) {
	s, pub, err := trust.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, err := trust.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := trust.ParseKeys([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	used := filepath.Join(t.TempDir(), "signed-ids.json")
	g := trust.NewGate(keys, "gw-1", used, nil, clock)
	exp := now.Add(10 * time.Minute)
	seal := func(sg *trust.Signer, in trust.Inner) []byte {
		b, err := trust.Seal(in, func(m []byte) ([]byte, error) { return sg.Sign(m, "test"), nil })
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cmd := func(id, device string, expires *time.Time) trust.Inner {
		return trust.Inner{Request: command.Request{ID: id, Name: "config-apply", Args: json.RawMessage(`{"yaml":"x"}`), Expires: expires}, Device: device}
	}
	late := now.Add(-time.Second)
	far := now.Add(trust.MaxValidity + time.Hour)
	cases := []struct {
		name    string
		payload []byte
		want    string
	}{
		{"foreign key", seal(foreign, cmd("c1", "gw-1", &exp)), "not in trust.keys"},
		{"other device", seal(s, cmd("c2", "gw-2", &exp)), `for device "gw-2"`},
		{"expired", seal(s, cmd("c3", "gw-1", &late)), "expired"},
		{"no expiry", seal(s, cmd("c4", "gw-1", nil)), `no "expires"`},
		{"too far", seal(s, cmd("c5", "gw-1", &far)), "ahead"},
		{"not base64", []byte(`{"signed":"%%%","minisig":"x"}`), "base64"},
		{"no signature", []byte(`{"signed":"` + base64.StdEncoding.EncodeToString([]byte(`{"id":"c6"}`)) + `","minisig":""}`), "no minisign signature"},
	}
	for _, c := range cases {
		req, _, err := g.Open(c.payload)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
		if c.name == "other device" && req.ID != "c2" {
			t.Errorf("a refused envelope's answer should carry its id; got %q", req.ID)
		}
	}
	// Tampering with the signed bytes after signing.
	env := seal(s, cmd("c7", "gw-1", &exp))
	var e trust.Envelope
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	inner, _ := base64.StdEncoding.DecodeString(e.Signed)
	e.Signed = base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(inner), `"yaml":"x"`, `"yaml":"y"`, 1)))
	tampered, _ := json.Marshal(e)
	if _, _, err := g.Open(tampered); !errors.Is(err, trust.ErrBadSig) {
		t.Errorf("tampered: %v, want ErrBadSig", err)
	}

	good := seal(s, cmd("c8", "gw-1", &exp))
	req, signer, err := g.Open(good)
	if err != nil || req.ID != "c8" || req.Name != "config-apply" || string(req.Args) != `{"yaml":"x"}` || signer != s.KeyID() {
		t.Fatalf("good: %+v %q %v", req, signer, err)
	}
	if _, _, err := g.Open(good); !errors.Is(err, trust.ErrReplay) {
		t.Errorf("replay: %v, want ErrReplay", err)
	}
	g2 := trust.NewGate(keys, "gw-1", used, nil, clock)
	if _, _, err := g2.Open(good); !errors.Is(err, trust.ErrReplay) {
		t.Errorf("replay after a restart: %v, want ErrReplay", err)
	}
	// After its expiry the id is forgotten (and the command refused as expired).
	now = exp.Add(time.Second)
	if _, _, err := g2.Open(seal(s, cmd("c9", "gw-1", ptr(now.Add(time.Minute))))); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(used)
	if strings.Contains(string(b), "c8") || !strings.Contains(string(b), "c9") {
		t.Errorf("replay record %s: want c8 pruned after its expiry and c9 kept", b)
	}
	if !trust.IsEnvelope(good) || trust.IsEnvelope([]byte(`{"id":"x","name":"health"}`)) {
		t.Errorf("IsEnvelope misclassifies")
	}
}

// TestGateStockTool: an envelope whose minisig the stock tool made over the
// inner bytes opens.
func TestGateStockTool(t *testing.T) {
	k := minisigntest.NewKey(t)
	keys, err := trust.ParseKeys([]string{k.Pub})
	if err != nil {
		t.Fatal(err)
	}
	g := trust.NewGate(keys, "gw-1", filepath.Join(t.TempDir(), "ids.json"), nil, nil)
	exp := time.Now().Add(time.Minute)
	inner, _ := json.Marshal(trust.Inner{Request: command.Request{ID: "m1", Name: "health", Expires: &exp}, Device: "gw-1"})
	env, _ := json.Marshal(trust.Envelope{Signed: base64.StdEncoding.EncodeToString(inner), Minisig: k.SignBytes(t, inner)})
	if req, _, err := g.Open(env); err != nil || req.ID != "m1" {
		t.Fatalf("Open = %+v, %v", req, err)
	}
}

func ptr[T any](v T) *T { return &v }
