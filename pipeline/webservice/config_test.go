package webservice

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hl7edge/hl7edge/pipeline/webservice/internal/wstest"
)

func TestDestinationConfigYAMLAndValidate(t *testing.T) {
	dir := t.TempDir()
	pw := wstest.PasswordFile(t, "pw")
	src := `
url: https://ingest.example.org/hl7/ping
logon_id: gw-17
password_file: ` + pw + `
allowed_hosts: ["*.example.org"]
session_lifetime: 10m
timeout: 5s
`
	var c DestinationConfig
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if c.SessionLifetime.D() != 10*time.Minute || c.MaxBackoff.D() != DefaultMaxBackoff || c.Timeout.D() != 5*time.Second {
		t.Errorf("durations %s %s %s", c.SessionLifetime, c.MaxBackoff, c.Timeout)
	}

	tests := []struct {
		name string
		mod  func(*DestinationConfig)
		want string
	}{
		{"no url", func(c *DestinationConfig) { c.URL = "" }, "url is empty"},
		{"relative url", func(c *DestinationConfig) { c.URL = "/ping" }, "absolute URL"},
		{"http url", func(c *DestinationConfig) { c.URL = "http://h/ping" }, "allow_insecure_http"},
		{"credentials in url", func(c *DestinationConfig) { c.URL = "https://u:p@h/ping" }, "password_file"},
		{"no logon", func(c *DestinationConfig) { c.LogonID = "" }, "logon_id"},
		{"no password file", func(c *DestinationConfig) { c.PasswordFile = "" }, "password_file is empty"},
		{"missing password file", func(c *DestinationConfig) { c.PasswordFile = filepath.Join(dir, "nope") }, "password_file"},
		{"cert without key", func(c *DestinationConfig) { c.CertFile = pw }, "cert_file and key_file"},
		{"missing ca", func(c *DestinationConfig) { c.CAFile = filepath.Join(dir, "ca.pem") }, "ca_file"},
		{"bad pattern", func(c *DestinationConfig) { c.AllowedHosts = []string{"[a-"} }, "allowed_hosts pattern"},
		{"empty pattern", func(c *DestinationConfig) { c.AllowedHosts = []string{" "} }, "empty pattern"},
		{"tiny timeout", func(c *DestinationConfig) { c.Timeout = 1 }, "timeout"},
		{"tiny backoff", func(c *DestinationConfig) { c.MaxBackoff = 1 }, "max_backoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := c
			tt.mod(&bad)
			err := bad.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
	bench := c
	bench.URL, bench.AllowInsecureHTTP = "http://bench/ping", true
	if err := bench.Validate(); err != nil {
		t.Errorf("http with allow_insecure_http: %v", err)
	}
}

func TestBadTLSFilesAreNamed(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	if _, err := NewHTTPClient(TLSFiles{CAFile: notPEM}); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Errorf("junk CA file: %v", err)
	}
	if _, err := NewHTTPClient(TLSFiles{CertFile: notPEM, KeyFile: notPEM}); err == nil || !strings.Contains(err.Error(), "cert_file") {
		t.Errorf("junk key pair: %v", err)
	}
}

func TestURLPolicy(t *testing.T) {
	p := URLPolicy{AllowedHosts: []string{"*.example.org", "ingest.example.com:8443", "10.0.0.?"}}
	for raw, want := range map[string]error{
		"https://a.example.org/post":            nil,
		"https://A.B.Example.ORG./post":         nil,
		"https://example.org/post":              ErrRefusedURL,
		"https://evil.com/a.example.org":        ErrRefusedURL,
		"https://a.example.org.evil.com/":       ErrRefusedURL,
		"https://ingest.example.com:8443/x":     nil,
		"https://ingest.example.com/x":          ErrRefusedURL,
		"https://10.0.0.7/x":                    nil,
		"https://10.0.0.77/x":                   ErrRefusedURL,
		"http://a.example.org/post":             ErrRefusedURL,
		"ftp://a.example.org/post":              ErrRefusedURL,
		"https://user:pw@a.example.org/":        ErrRefusedURL,
		"/relative":                             ErrTransport,
		"":                                      ErrTransport,
		"https://a.example.org:443/?Action=x y": nil,
	} {
		_, err := p.Check("HL7POSTURL", raw)
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Errorf("Check(%q) = %v, want %v", raw, err, want)
		}
	}
	open := URLPolicy{AllowInsecureHTTP: true}
	if _, err := open.Check("HL7POSTURL", "http://anything/"); err != nil {
		t.Errorf("insecure allowed: %v", err)
	}
}

func TestFormatFrequencyAndVersion(t *testing.T) {
	for d, want := range map[time.Duration]string{
		20 * time.Second: "20 Seconds", 90 * time.Second: "90 Seconds", 5 * time.Minute: "5 Minutes",
		2 * time.Hour: "2 Hours", 0: "1 Seconds", 1500 * time.Millisecond: "2 Seconds",
	} {
		if got := FormatFrequency(d); got != want {
			t.Errorf("FormatFrequency(%s) = %q, want %q", d, got, want)
		}
	}
	for v, want := range map[string]string{
		"1.4.2.0": "1.4.2.0", "v1.4.2": "1.4.2.0", "1.4.2-3-gabcdef": "1.4.2.3", "1.4.2-rc1": "1.4.2.0",
		"dev": "0.0.0.0", "": "0.0.0.0", "2": "2.0.0.0", "1.2.3.4.5": "1.2.3.4",
	} {
		if got := FormatPMVersion(v); got != want {
			t.Errorf("FormatPMVersion(%q) = %q, want %q", v, got, want)
		}
	}
}

// The sample configuration next to the code must stay valid.
func TestSampleYAML(t *testing.T) {
	data, err := os.ReadFile("sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Sources      []SourceConfig      `yaml:"sources"`
		Destinations []DestinationConfig `yaml:"destinations"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Sources) != 1 || len(doc.Destinations) != 1 {
		t.Fatalf("sample has %d sources and %d destinations", len(doc.Sources), len(doc.Destinations))
	}
	d, s := doc.Destinations[0], doc.Sources[0]
	d.SetDefaults()
	s.SetDefaults()
	// The sample names files that exist only on a gateway; everything else must pass.
	for _, err := range []error{d.Validate(), s.Validate()} {
		for _, line := range strings.Split(errString(err), "\n") {
			if line != "" && !strings.Contains(line, "does not exist") {
				t.Errorf("sample.yaml: %s", line)
			}
		}
	}
	if d.URL == "" || s.Frequency.D() != 20*time.Second || !s.Reping {
		t.Errorf("sample parsed wrong: %+v %+v", d, s)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
