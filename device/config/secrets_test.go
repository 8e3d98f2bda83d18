package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretWarnings: every secret file any block states (passwords,
// private keys) that other users can read is named with its key; private
// ones and certificates are not.
func TestSecretWarnings(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	open, private, key, cert := write("ehr.pass", 0o644), write("mqtt.pass", 0o600), write("lis.key", 0o644), write("lis.pem", 0o644)
	c, err := Parse([]byte(`device: {id: gw, board: sim}
spool: {dir: ` + dir + `/spool}
destinations:
  - {name: ehr, type: webservice, url: "https://ingest.example.org/ping", logon_id: gw, password_file: ` + open + `}
  - {name: lis, type: mllp, address: "10.0.0.5:2575", tls: {cert_file: ` + cert + `, key_file: ` + key + `}}
mqtt: {broker: "tls://mqtt.example.org:8883", username: gw, password_file: ` + private + `}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(c.SecretWarnings(), "\n")
	for _, want := range []string{`destination "ehr" password_file ` + open, `destination "lis" tls.key_file ` + key} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings:\n%s\nwant one naming %s", got, want)
		}
	}
	if strings.Contains(got, private) || strings.Contains(got, cert) {
		t.Errorf("warnings:\n%s\nname a private file or a certificate", got)
	}
}
