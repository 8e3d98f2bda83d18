package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/gateway"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

// TestRemoteRefusals: each way a remote change could lower transport
// security, send a password or write a file somewhere new, or move the
// box's state is named, whatever the entry is called; changes that keep
// everything as safe list nothing. Each case edits the current file.
func TestRemoteRefusals(t *testing.T) {
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc")
	if err := os.MkdirAll(etc, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ehr.pass", "mqtt.pass", "ca.pem", "c.pem", "k.pem", "clients.pem"} {
		if err := os.WriteFile(filepath.Join(etc, f), []byte("x\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	text := strings.NewReplacer("ETC", etc, "DIR", dir).Replace(`device: {id: gw, board: sim}
spool: {dir: DIR/state/spool}
admin: {socket: DIR/run/admin.sock}
sources:
  - {name: in, type: mllp, listen: "0.0.0.0:2575", tls: {cert_file: ETC/c.pem, key_file: ETC/k.pem, client_ca_file: ETC/clients.pem}}
destinations:
  - {name: ehr, type: webservice, url: "https://ingest.example.org/ping", logon_id: gw, password_file: ETC/ehr.pass, allowed_hosts: ["*.example.org"]}
  - {name: lis, type: mllp, address: "10.0.0.5:2575", tls: {enabled: true}}
  - {name: archive, type: file, dir: DIR/out}
mqtt: {broker: "tls://mqtt.hospital.lan:8883", username: gw, password_file: ETC/mqtt.pass}
`)
	parse := func(s string) *Config {
		t.Helper()
		c, err := Parse([]byte(s))
		if err != nil {
			t.Fatalf("%v\n%s", err, s)
		}
		return c
	}
	cur := parse(text)
	const plainLIS = `{name: lis, type: mllp, address: "10.0.0.5:2575", tls: {enabled: true}}`
	for _, c := range []struct {
		name     string
		old, new string // replaced in the current text
		want     string // "" = allowed
	}{
		{"unchanged", "", "", ""},
		{"narrower allowed_hosts", `["*.example.org"]`, `["a.example.org"]`, ""},
		{"another host under allowed_hosts", "https://ingest.", "https://b.", ""},
		{"TLS destination on a new port of a known host", plainLIS, plainLIS + "\n  - {name: lis2, type: mllp, address: \"10.0.0.5:2576\", tls: {enabled: true}}", ""},
		{"file destination below the current one", "dir: " + dir + "/out}", "dir: " + dir + "/out/ward3}", ""},
		{"allow_insecure_http", "allowed_hosts:", "allow_insecure_http: true, allowed_hosts:", "TLS off"},
		{"wider allowed_hosts", `["*.example.org"]`, `["*.example.org", "*"]`, "allowed_hosts"},
		{"allowed_hosts removed", `, allowed_hosts: ["*.example.org"]`, "", "allowed_hosts"},
		{"new web-service host", "https://ingest.example.org", "https://evil.example.net", "sends nothing by webservice to host evil.example.net"},
		{"web service pointed at the broker", "https://ingest.example.org", "https://mqtt.hospital.lan:8883", "sends nothing by webservice to host mqtt.hospital.lan"},
		{"other CA", "logon_id: gw,", "logon_id: gw, ca_file: " + etc + "/ca.pem,", "other trusted roots"},
		{"new MLLP host", "10.0.0.5:2575", "10.6.6.6:2575", "sends nothing by mllp to host 10.6.6.6"},
		{"plain MLLP to the broker's host", plainLIS, plainLIS + "\n  - {name: leak, type: mllp, address: \"mqtt.hospital.lan:2575\"}", "sends nothing by mllp to host mqtt.hospital.lan"},
		{"plain MLLP on a new port of a known host", plainLIS, plainLIS + "\n  - {name: leak, type: mllp, address: \"10.0.0.5:2576\"}", "a new endpoint without TLS"},
		{"MLLP TLS off", plainLIS, `{name: lis, type: mllp, address: "10.0.0.5:2575"}`, "TLS off"},
		{"MLLP renamed and TLS off", plainLIS, `{name: lis-new, type: mllp, address: "10.0.0.5:2575"}`, `destination "lis-new": address 10.0.0.5:2575: TLS off`},
		{"server_name changed", "tls: {enabled: true}", "tls: {enabled: true, server_name: evil.example.net}", "tls.server_name"},
		{"listener renamed and TLS off", `{name: in, type: mllp, listen: "0.0.0.0:2575", tls: {cert_file: ` + etc + `/c.pem, key_file: ` + etc + `/k.pem, client_ca_file: ` + etc + `/clients.pem}}`,
			`{name: in2, type: mllp, listen: "0.0.0.0:2575"}`, `source "in2": listen 0.0.0.0:2575: TLS off`},
		{"client certificates no longer required", ", client_ca_file: " + etc + "/clients.pem", "", "another client-certificate requirement"},
		{"MQTT plain tcp", "tls://mqtt.hospital.lan:8883", "tcp://mqtt.hospital.lan:1883", "TLS off"},
		{"new MQTT host", "tls://mqtt.hospital.lan", "tls://mqtt.evil.net", "sends nothing by mqtt to host mqtt.evil.net"},
		{"password_file /etc/shadow", etc + "/ehr.pass", "/etc/shadow", "outside the directories"},
		{"password sent to another host", "password_file: " + etc + "/ehr.pass", "password_file: " + etc + "/mqtt.pass", "a password goes only where it went before"},
		{"private key sent as the password", "password_file: " + etc + "/ehr.pass", "password_file: " + etc + "/k.pem", "a password goes only where it went before"},
		{"file destination to /etc", "dir: " + dir + "/out}", "dir: /etc}", "outside the directories"},
		{"file destination into the spool", "dir: " + dir + "/out}", "dir: " + dir + "/state/spool/x}", "inside spool.dir"},
		{"file destination into the state directory", "dir: " + dir + "/out}", "dir: " + dir + "/state}", "in the state directory"},
		{"spool.dir moved", "state/spool", "state/spool2", "spool.dir"},
		{"admin.socket moved", "run/admin.sock", "state/signed-commands.json", "admin.socket"},
	} {
		next := parse(strings.Replace(text, c.old, c.new, 1))
		if c.old != "" && !strings.Contains(text, c.old) {
			t.Fatalf("%s: %q is not in the test's text", c.name, c.old)
		}
		got := strings.Join(RemoteRefusals(cur, next), "\n")
		switch {
		case c.want == "" && got != "":
			t.Errorf("%s: refused:\n%s\nwant allowed", c.name, got)
		case c.want != "" && !strings.Contains(got, c.want):
			t.Errorf("%s: refusals:\n%s\nwant one naming %q", c.name, got, c.want)
		}
	}
	// From plain to TLS is no refusal.
	plain := parse(strings.Replace(text, "tls://mqtt.hospital.lan:8883", "tcp://mqtt.hospital.lan:8883", 1))
	if d := RemoteRefusals(plain, cur); len(d) != 0 {
		t.Errorf("turning TLS on refused: %v", d)
	}
}

// relayConfig is a destination type that states no Reach.
type relayConfig struct {
	Host string `yaml:"host"`
}

func (c *relayConfig) Validate() error { return nil }

// TestRemoteRefusalsFailClosed: an entry of a type that states no Reach is
// refused when it is new or changed, so a type added to the registry is
// never a way around the rule; a file destination, which states its dir,
// is judged by it.
func TestRemoteRefusalsFailClosed(t *testing.T) {
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
		archive = "  - {name: archive, type: file, dir: /srv/out}\n"
		relayA  = "  - {name: up, type: relay, host: a.example.org}\n"
		relayB  = "  - {name: up, type: relay, host: b.example.org}\n"
	)
	for _, c := range []struct {
		name      string
		cur, next string
		want      string // "" = allowed
	}{
		{"a file destination beside none", "", archive, "names no output file"},
		{"a file destination moved below", archive, strings.Replace(archive, "/srv/out", "/srv/out/b", 1), ""},
		{"a file destination moved away", archive, strings.Replace(archive, "/srv/out", "/srv/elsewhere", 1), "outside the directories"},
		{"an unknown type added", archive, archive + relayA, `destination "up": type relay`},
		{"an unknown type unchanged", relayA, relayA, ""},
		{"an unknown type changed", relayA, relayB, `destination "up": type relay`},
	} {
		got := strings.Join(RemoteRefusals(parse(c.cur), parse(c.next)), "; ")
		switch {
		case c.want == "" && got != "":
			t.Errorf("%s: refused %q, want allowed", c.name, got)
		case c.want != "" && !strings.Contains(got, c.want):
			t.Errorf("%s: refusals %q, want one naming %q", c.name, got, c.want)
		}
	}
}
