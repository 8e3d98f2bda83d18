package gateway_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/hl7edge/hl7edge/pipeline/gateway"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/storage"
)

// One rule for error text: the caller adds the name, the callee does not
// repeat it. A destination that cannot be built is named once, by the
// gateway, whatever its type (before: `destination "ehr": webservice
// destination "ehr": ...`).
func TestBuildErrorNamesTheDestinationOnce(t *testing.T) {
	// Files that exist (so the configuration checks pass) but hold no
	// certificate: only building the destination finds that out.
	dir := t.TempDir()
	pass, notPEM := filepath.Join(dir, "pass"), filepath.Join(dir, "ca.pem")
	for _, p := range []string{pass, notPEM} {
		if err := os.WriteFile(p, []byte("not a certificate\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for typ, block := range map[string]string{
		"webservice": `{name: ehr, type: webservice, url: "https://ehr.example.org/ping", logon_id: gw, password_file: ` + pass + `, ca_file: ` + notPEM + `}`,
		"mllp":       `{name: ehr, type: mllp, address: "127.0.0.1:1", tls: {ca_file: ` + notPEM + `}}`,
	} {
		var f struct {
			Destinations []gateway.Destination `yaml:"destinations"`
		}
		if err := yaml.Unmarshal([]byte("destinations:\n  - "+block+"\n"), &f); err != nil {
			t.Fatal(err)
		}
		spool := storage.Config{Dir: t.TempDir()}
		spool.SetDefaults()
		_, err := gateway.New(gateway.Config{Spool: spool, Destinations: f.Destinations, DeviceID: "gw", Version: "1"},
			gateway.Options{Health: health.NewRegistry("gw", "1", nil)})
		if err == nil {
			t.Fatalf("%s: a destination whose file is missing was built", typ)
		}
		if n := strings.Count(err.Error(), `"ehr"`); n != 1 || !strings.Contains(err.Error(), `destination "ehr": `) {
			t.Errorf("%s: %q names the destination %d times, want once, by the gateway", typ, err, n)
		}
	}
}
