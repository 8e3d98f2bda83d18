package trust_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/trust"
)

// FuzzGateOpen: whatever arrives on cmd/req, opening it never panics, and
// only a command the trusted key signed for this device opens.
func FuzzGateOpen(f *testing.F) {
	s, pub, err := trust.GenerateSigner()
	if err != nil {
		f.Fatal(err)
	}
	keys, err := trust.ParseKeys([]string{pub})
	if err != nil {
		f.Fatal(err)
	}
	exp := time.Now().Add(time.Hour)
	for i, dev := range []string{"gw-1", "gw-2"} {
		raw, _ := json.Marshal(map[string]string{"yaml": "x"})
		env, err := trust.Seal(trust.Inner{Request: command.Request{ID: "seed-" + string(rune('a'+i)), Name: "config-apply", Args: raw, Expires: &exp}, Device: dev},
			func(m []byte) ([]byte, error) { return s.Sign(m, "fuzz"), nil })
		if err != nil {
			f.Fatal(err)
		}
		f.Add(env)
	}
	f.Add([]byte(`{"signed":"e30=","minisig":"untrusted comment: x\nRWQ\ntrusted comment: y\nAAAA"}`))
	f.Add([]byte(`{"signed":null}`))
	g := trust.NewGate(keys, "gw-1", filepath.Join(f.TempDir(), "ids.json"), nil, nil)
	f.Fuzz(func(t *testing.T, payload []byte) {
		req, _, err := g.Open(payload)
		if err == nil && !strings.HasPrefix(req.ID, "seed-a") {
			t.Fatalf("an envelope the key did not sign for gw-1 opened: %+v", req)
		}
	})
}
