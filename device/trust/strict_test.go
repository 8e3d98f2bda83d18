package trust_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/trust"
)

// TestGateStrictJSON: the signed bytes and the envelope must mean the same
// to Go as to any other JSON reader. Go's encoding/json matches keys
// case-insensitively (with Unicode folding: U+017F ſ folds to s) and keeps
// the last of duplicates, so each of these would otherwise run a command the
// signer's tools read differently.
func TestGateStrictJSON(t *testing.T) {
	s, pub, err := trust.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := trust.ParseKeys([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	g := trust.NewGate(keys, "ward3-gw", t.TempDir()+"/signed-commands.json", nil, func() time.Time { return now })
	exp := `"expires":"2026-11-30T12:10:00Z"`
	envelope := func(inner, signedKey string) []byte {
		sig := s.Sign([]byte(inner), "test")
		return []byte(`{"` + signedKey + `":"` + base64.StdEncoding.EncodeToString([]byte(inner)) + `","minisig":` + jsonString(string(sig)) + `}`)
	}
	cases := []struct {
		name, inner, signedKey, want string
	}{
		{"case-variant name", `{"id":"s1","name":"health",` + exp + `,"device":"ward3-gw","NAME":"dead-purge"}`, "signed", `"NAME"`},
		{"case-variant device", `{"id":"s2","name":"health",` + exp + `,"device":"ward4-gw","Device":"ward3-gw"}`, "signed", `"Device"`},
		{"duplicate name", `{"id":"s3","name":"health",` + exp + `,"device":"ward3-gw","name":"dead-purge"}`, "signed", `"name" twice`},
		{"unknown key", `{"id":"s4","name":"health",` + exp + `,"device":"ward3-gw","run_as":"root"}`, "signed", `"run_as"`},
		{"duplicate in args", `{"id":"s5","name":"dead-purge","args":{"destination":"ehr","destination":"lab"},` + exp + `,"device":"ward3-gw"}`, "signed", `"destination" twice`},
		{"long s on the envelope", `{"id":"s6","name":"health",` + exp + `,"device":"ward3-gw"}`, "ſigned", `"ſigned"`},
	}
	for _, c := range cases {
		req, _, err := g.Open(envelope(c.inner, c.signedKey))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: opened %q (err %v); want a refusal naming %s", c.name, req.Name, err, c.want)
		}
	}
	// The same bytes without the trick open.
	if _, _, err := g.Open(envelope(`{"id":"s7","name":"health",`+exp+`,"device":"ward3-gw"}`, "signed")); err != nil {
		t.Fatalf("a plain signed command: %v", err)
	}
}

func jsonString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// TestReplayRecordClockJump: a clock run ahead (spoofed NTP) makes the
// record prune ids before their expiry; after the clock is corrected a
// captured command must still be refused, though its expiry lies ahead.
func TestReplayRecordClockJump(t *testing.T) {
	s, pub, err := trust.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := trust.ParseKeys([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	real := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	now := real
	used := t.TempDir() + "/signed-commands.json"
	g := trust.NewGate(keys, "ward3-gw", used, nil, func() time.Time { return now })
	seal := func(id string, exp time.Time) []byte {
		inner := `{"id":"` + id + `","name":"dead-purge","expires":"` + exp.Format(time.RFC3339) + `","device":"ward3-gw"}`
		return []byte(`{"signed":"` + base64.StdEncoding.EncodeToString([]byte(inner)) + `","minisig":` + jsonString(string(s.Sign([]byte(inner), "t"))) + `}`)
	}
	captured := seal("purge-1", real.Add(time.Hour))
	if _, _, err := g.Open(captured); err != nil {
		t.Fatal(err)
	}
	now = real.Add(48 * time.Hour) // spoofed NTP: two days ahead
	if _, _, err := g.Open(seal("health-1", now.Add(10*time.Minute))); err != nil {
		t.Fatal(err)
	}
	now = real.Add(5 * time.Minute) // corrected
	for _, gate := range []*trust.Gate{g, trust.NewGate(keys, "ward3-gw", used, nil, func() time.Time { return now })} {
		if _, _, err := gate.Open(captured); err == nil {
			t.Errorf("captured command replayed after the clock was corrected (expiry %s, clock %s)", real.Add(time.Hour).Format(time.RFC3339), now.Format(time.RFC3339))
		}
	}
	// A command signed now, with an expiry past what was forgotten, runs.
	if _, _, err := g.Open(seal("purge-2", real.Add(2*time.Hour))); err != nil {
		t.Errorf("a fresh command after the correction: %v", err)
	}
}
