package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/flow"
	"github.com/hl7edge/hl7edge/pipeline/gateway"
)

// TestTransportDowngrades: each way of lowering transport security is
// named; changes that keep it (or raise it) list nothing.
func TestTransportDowngrades(t *testing.T) {
	dir := t.TempDir()
	pass := filepath.Join(dir, "p")
	if err := os.WriteFile(pass, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// base fills a configuration; ws is the web-service destination's
	// extra keys, lis the MLLP destination's, in its source's, mqtt the broker.
	base := func(url, ws, lis, in, mqtt string) *Config {
		t.Helper()
		text := fmt.Sprintf(`device: {id: gw, board: sim}
spool: {dir: %s}
sources:
  - {name: in, type: mllp, listen: "127.0.0.1:2575"%s}
destinations:
  - {name: ehr, type: webservice, url: "%s", logon_id: gw, password_file: %s%s}
  - {name: lis, type: mllp%s}
mqtt: {broker: "%s"}
`, filepath.Join(dir, "spool"), in, url, pass, ws, lis, mqtt)
		c, err := Parse([]byte(text))
		if err != nil {
			t.Fatalf("%v\n%s", err, text)
		}
		return c
	}
	const (
		url   = "https://ingest.example.org/ping"
		hosts = `, allowed_hosts: ["*.example.org"]`
		lis   = `, address: "10.0.0.5:2575", tls: {enabled: true}`
		in    = `, tls: {cert_file: /c, key_file: /k, client_ca_file: /ca}`
		mq    = "tls://mqtt.example.org:8883"
	)
	cur := base(url, hosts, lis, in, mq)
	for _, c := range []struct {
		name string
		next *Config
		want string // "" = no downgrade
	}{
		{"unchanged", base(url, hosts, lis, in, mq), ""},
		{"narrower allowed_hosts", base(url, `, allowed_hosts: ["a.example.org"]`, lis, in, mq), ""},
		{"another host under allowed_hosts", base("https://b.example.org/ping", hosts, lis, in, mq), ""},
		{"allow_insecure_http", base("http://ingest.example.org/ping", hosts+", allow_insecure_http: true", lis, in, mq), "allow_insecure_http turned on"},
		{"wider allowed_hosts", base(url, `, allowed_hosts: ["*.example.org", "*"]`, lis, in, mq), `pattern "*" is wider`},
		{"allowed_hosts removed", base(url, "", lis, in, mq), "allowed_hosts empty"},
		{"new web-service host", base("https://evil.example.net/ping", hosts, lis, in, mq), "url host evil.example.net is new"},
		{"other CA", base(url, hosts+", ca_file: "+ca, lis, in, mq), "ca_file"},
		{"new MLLP host", base(url, hosts, `, address: "10.6.6.6:2575", tls: {enabled: true}`, in, mq), "address host 10.6.6.6 is new"},
		{"MLLP TLS off", base(url, hosts, `, address: "10.0.0.5:2575"`, in, mq), `destination "lis": tls turned off`},
		{"listener TLS off", base(url, hosts, lis, "", mq), `source "in": tls turned off`},
		{"MQTT plain tcp", base(url, hosts, lis, in, "tcp://mqtt.example.org:1883"), "mqtt.broker: TLS turned off"},
		{"new MQTT host", base(url, hosts, lis, in, "tls://mqtt.evil.net:8883"), "mqtt.broker: host mqtt.evil.net is new"},
	} {
		got := strings.Join(TransportDowngrades(cur, c.next), "; ")
		switch {
		case c.want == "" && got != "":
			t.Errorf("%s: downgrades %q, want none", c.name, got)
		case c.want != "" && !strings.Contains(got, c.want):
			t.Errorf("%s: downgrades %q, want one naming %q", c.name, got, c.want)
		}
	}
	// From plain to TLS is not a downgrade.
	if d := TransportDowngrades(base(url, hosts, lis, in, "tcp://mqtt.example.org:1883"), cur); len(d) != 0 {
		t.Errorf("turning TLS on listed %v", d)
	}
}

// relayConfig is a destination type the transport check knows nothing of.
type relayConfig struct {
	Host string `yaml:"host"`
}

func (c *relayConfig) Validate() error { return nil }

// TestTransportDowngradesFailClosed: an entry of a type the check cannot
// read is a downgrade when it is new or changed, so a type added to the
// registry is never a way around the check; one that reaches no other host
// (a file) is not.
func TestTransportDowngradesFailClosed(t *testing.T) {
	types := gateway.DefaultTypes()
	types.AddDestination(component.NewDestination("relay", nil, func(*relayConfig, component.Deps) (flow.Output, error) {
		return nil, errors.New("not built in this test")
	}))
	parse := func(dests string) *Config {
		t.Helper()
		c, err := ParseTypes([]byte("device: {id: gw, board: sim}\ndestinations:\n"+dests), types)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	const (
		archive = "  - {name: archive, type: file, dir: /tmp/out}\n"
		relayA  = "  - {name: up, type: relay, host: a.example.org}\n"
		relayB  = "  - {name: up, type: relay, host: b.example.org}\n"
	)
	for _, c := range []struct {
		name      string
		cur, next string
		want      string // "" = no downgrade
	}{
		{"a file destination added", "", archive, ""},
		{"a file destination moved", archive, strings.Replace(archive, "/tmp/out", "/tmp/elsewhere", 1), ""},
		{"an unknown type added", archive, archive + relayA, `destination "up": type relay`},
		{"an unknown type unchanged", relayA, relayA, ""},
		{"an unknown type changed", relayA, relayB, `destination "up": type relay`},
	} {
		got := strings.Join(TransportDowngrades(parse(c.cur), parse(c.next)), "; ")
		switch {
		case c.want == "" && got != "":
			t.Errorf("%s: downgrades %q, want none", c.name, got)
		case c.want != "" && !strings.Contains(got, c.want):
			t.Errorf("%s: downgrades %q, want one naming %q", c.name, got, c.want)
		}
	}
}
