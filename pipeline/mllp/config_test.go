package mllp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

func TestSampleConfigParsesAndValidates(t *testing.T) {
	data, err := os.ReadFile("sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Sources []struct {
			Name           string `yaml:"name"`
			Type           string `yaml:"type"`
			ListenerConfig `yaml:",inline"`
		} `yaml:"sources"`
		Destinations []struct {
			Name              string `yaml:"name"`
			Type              string `yaml:"type"`
			DestinationConfig `yaml:",inline"`
		} `yaml:"destinations"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true) // a key the structs do not know is a typo in the sample
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Sources) != 1 || len(doc.Destinations) != 1 {
		t.Fatalf("sample has %d sources and %d destinations, want 1 and 1", len(doc.Sources), len(doc.Destinations))
	}
	src := doc.Sources[0].ListenerConfig
	want := src
	want.SetDefaults()
	if src != want {
		t.Errorf("sample listener values differ from the defaults:\n%+v\n%+v", src, want)
	}
	if err := src.Validate(); err != nil {
		t.Error(err)
	}
	if src.MaxMessageBytes != 1<<20 || src.IdleTimeout.D() != 5*time.Minute || src.MaxConnections != 64 {
		t.Errorf("sample listener: %+v", src)
	}
	dst := doc.Destinations[0].DestinationConfig
	wantDst := dst
	wantDst.SetDefaults()
	if dst != wantDst {
		t.Errorf("sample destination values differ from the defaults:\n%+v\n%+v", dst, wantDst)
	}
	if err := dst.Validate(); err != nil {
		t.Error(err)
	}
	if dst.TLS.On() {
		t.Error("sample destination turns TLS on by default")
	}
}

func TestListenerConfigValidate(t *testing.T) {
	valid := func() ListenerConfig {
		c := ListenerConfig{Listen: "0.0.0.0:2575"}
		c.SetDefaults()
		return c
	}
	tests := []struct {
		name   string
		mutate func(*ListenerConfig)
		want   string // substring of the error; "" means valid
	}{
		{"defaults", func(*ListenerConfig) {}, ""},
		{"ipv6", func(c *ListenerConfig) { c.Listen = "[::]:2575" }, ""},
		{"no listen", func(c *ListenerConfig) { c.Listen = "" }, "listen is empty"},
		{"no port", func(c *ListenerConfig) { c.Listen = "0.0.0.0" }, "not host:port"},
		{"too many connections", func(c *ListenerConfig) { c.MaxConnections = 20000 }, "max_connections 20000 is out of range: use 1 to 10000"},
		{"negative connections", func(c *ListenerConfig) { c.MaxConnections = -1 }, "max_connections -1"},
		{"tiny messages", func(c *ListenerConfig) { c.MaxMessageBytes = 10 }, "max_message_bytes 10 is out of range: use 256 to 1GiB"},
		{"huge messages", func(c *ListenerConfig) { c.MaxMessageBytes = 2 << 30 }, "max_message_bytes 2GiB"},
		{"key without cert", func(c *ListenerConfig) { c.TLS.KeyFile = "k.pem" }, "tls needs both cert_file and key_file"},
		{"client CA alone", func(c *ListenerConfig) { c.TLS.ClientCAFile = "ca.pem" }, "tls needs both"},
		{"negative idle", func(c *ListenerConfig) { c.IdleTimeout = units.Duration(-time.Second) }, "idle_timeout -1s is too short"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	// Several mistakes are all reported at once.
	c := ListenerConfig{MaxConnections: -1}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "listen") || !strings.Contains(err.Error(), "max_connections") || !strings.Contains(err.Error(), "idle_timeout") {
		t.Errorf("Validate of an empty config = %v, want every mistake named", err)
	}
}

func TestDestinationConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  DestinationConfig
		want string
	}{
		{"ok", DestinationConfig{Address: "lis.example.org:2575"}, ""},
		{"no address", DestinationConfig{}, "address is empty"},
		{"no host", DestinationConfig{Address: ":2575"}, "not host:port"},
		{"cert without key", DestinationConfig{Address: "a:1", TLS: ClientTLS{CertFile: "c.pem"}}, "cert_file and key_file go together"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.SetDefaults()
			err := tc.cfg.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("error = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestNewServerAndOutputReportBadTLSFiles(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	comp := health.NewRegistry("t", "v", nil).Component(health.Source, "s", "mllp")
	_, err := NewServer("s", ListenerConfig{Listen: "127.0.0.1:0", TLS: ServerTLS{CertFile: missing, KeyFile: missing}}, HandlerFunc(echo), discardLogger(), comp)
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("NewServer with a missing cert = %v, want the path named", err)
	}
	_, err = NewOutput("d", DestinationConfig{Address: "a:1", TLS: ClientTLS{CAFile: notPEM}}, discardLogger(), nil)
	if err == nil || !strings.Contains(err.Error(), "ca_file") || !strings.Contains(err.Error(), notPEM) {
		t.Errorf("NewOutput with a non-PEM CA = %v, want ca_file and the path named", err)
	}
	if _, err := NewServer("s", ListenerConfig{}, HandlerFunc(echo), discardLogger(), comp); err == nil || !strings.Contains(err.Error(), `source "s"`) {
		t.Errorf("NewServer with no listen = %v, want an error naming the source", err)
	}
}
