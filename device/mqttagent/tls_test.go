package mqttagent

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/auth"

	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// TestTLSAndPassword runs the agent against a broker that demands TLS with
// a client certificate and a user name and password.
func TestTLSAndPassword(t *testing.T) {
	t.Parallel()
	ca, err := throwawayca.NewCA("broker CA")
	if err != nil {
		t.Fatal(err)
	}
	srvLeaf, err := ca.Issue("broker", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cliLeaf, err := ca.Issue("gw1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files, err := ca.WriteFiles(dir, "gw1", cliLeaf)
	if err != nil {
		t.Fatal(err)
	}
	const password = "pw-Zq81-never-logged"
	passFile := filepath.Join(dir, "mqtt.pass")
	if err := os.WriteFile(passFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongFile := filepath.Join(dir, "wrong.pass")
	if err := os.WriteFile(wrongFile, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{
		TLS: &tls.Config{
			MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{srvLeaf.TLS},
			ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert,
		},
		Ledger: &auth.Ledger{Auth: auth.AuthRules{
			{Username: "gw-17", Password: password, Allow: true},
			{Username: "observer", Password: "obs", Allow: true},
		}},
	})
	if !strings.HasPrefix(b.URL, "tls://") {
		t.Fatalf("broker url %s", b.URL)
	}
	good := Config{
		Broker: b.URL, Username: "gw-17", PasswordFile: passFile,
		CAFile: files.CA, CertFile: files.Cert, KeyFile: files.Key,
		HealthInterval: units.Duration(time.Hour),
	}

	t.Run("verified with password", func(t *testing.T) {
		r := startAgent(t, good, agentSetup{})
		r.waitState(t, health.Up)
		ob := mqtttest.Subscribe(t, b.URL, "hl7edge/gw1/status", mqtttest.ClientOptions{
			TLS:      &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Pool(), Certificates: []tls.Certificate{cliLeaf.TLS}},
			Username: "observer", Password: "obs",
		})
		ob.Log.WaitFor(t, 0, "birth over TLS", mqtttest.JSONHas("hl7edge/gw1/status", map[string]any{"state": "online"}))
		r.stop(t)
		if strings.Contains(r.logs.String(), password) {
			t.Error("the broker password appears in the agent's log")
		}
	})

	// Each of these must keep the agent from connecting, and Run must still
	// stop cleanly.
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		why  string // in the component's last error
		tls  bool   // counted as a TLS failure (FAULT code 4)
	}{
		{"wrong password", func(c *Config) { c.PasswordFile = wrongFile }, "not Authorized", false},
		{"broker CA not trusted", func(c *Config) { c.CAFile = "" }, "unknown authority", true},
		{"no client certificate", func(c *Config) { c.CertFile, c.KeyFile = "", "" }, "certificate required", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mod(&cfg)
			r := startAgent(t, cfg, agentSetup{device: "bad"})
			r.waitState(t, health.Down)
			snap := r.reg.Snapshot()
			c, _ := snap.Component(health.Service, "mqtt")
			if !strings.Contains(c.LastError, tc.why) {
				t.Errorf("mqtt last error = %q, want it to say %q", c.LastError, tc.why)
			}
			if got := c.Counters[health.CounterTLSErrors] > 0; got != tc.tls {
				t.Errorf("counted as a TLS failure: %v, want %v (counters %v)", got, tc.tls, c.Counters)
			}
			r.stop(t)
			for _, m := range b.Log.All() {
				if m.Client == "hl7edge-bad" {
					t.Fatalf("an agent that should have been refused published %s", m.Topic)
				}
			}
			if strings.Contains(r.logs.String(), password) {
				t.Error("the broker password appears in the agent's log")
			}
		})
	}
}
