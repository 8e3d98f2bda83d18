package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTrustChanges: changing what the gateway trusts or how it keeps the
// spool is named; other edits list nothing.
func TestTrustChanges(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "spool.key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const k1 = "RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3"
	const k2 = "RWTAPRW2qy9FjsBiMZaBfpjeQ7Z8kpQ+KaxNyS+Yv4XcIF4dEsvC6vtc"
	base := func(spool, trust, firmware string) *Config {
		t.Helper()
		text := fmt.Sprintf("device: {id: gw, board: sim}\nspool: {dir: %s%s}\n%s%s",
			filepath.Join(dir, "spool"), spool, trust, firmware)
		c, err := Parse([]byte(text))
		if err != nil {
			t.Fatalf("%v\n%s", err, text)
		}
		return c
	}
	one := "trust: {keys: [" + k1 + "]}\n"
	cur := base("", one, "")
	for _, c := range []struct {
		name string
		next *Config
		want string // "" = nothing changed that matters
	}{
		{"unchanged", base("", one, ""), ""},
		{"key added", base("", "trust: {keys: ["+k1+", "+k2+"]}\n", ""), "trust.keys changed"},
		{"key replaced", base("", "trust: {keys: ["+k2+"]}\n", ""), "trust.keys changed"},
		{"keys removed", base("", "", ""), "trust.keys changed"},
		{"firmware dir", base("", one, "firmware: {dir: "+filepath.Join(dir, "fw")+"}\n"), "firmware.dir changed"},
		{"firmware roots", base("", one, "firmware: {ca_file: "+ca+"}\n"), "firmware.ca_file changed"},
		{"encryption added", base(", encryption_key_file: "+key, one, ""), "spool.encryption_key_file changed"},
		{"trial only", base("", one, "firmware: {trial: 5m}\n"), ""},
	} {
		got := strings.Join(TrustChanges(cur, c.next), "; ")
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%s: TrustChanges = %q, want %q", c.name, got, c.want)
		}
	}
}
