package mqttagent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

func TestSampleConfig(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		MQTT Config `yaml:"mqtt"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("sample.yaml: %v", err)
	}
	c := doc.MQTT
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("sample.yaml does not validate: %v", err)
	}
	if c.Broker != "tls://mqtt.example.org:8883" || c.Username != "gw-17" || c.PasswordFile != "/etc/hl7edge/mqtt.pass" ||
		c.TopicRoot != "hl7edge" || c.HealthInterval.D() != 30*time.Second || c.KeepAlive.D() != 30*time.Second {
		t.Fatalf("sample.yaml decoded to %+v", c)
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := Config{Broker: "tcp://broker:1883"}
	c.SetDefaults()
	if c.TopicRoot != "hl7edge" || c.HealthInterval.D() != 30*time.Second || c.KeepAlive.D() != 30*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	var off Config
	if off.Enabled() || off.Validate() != nil {
		t.Fatal("an empty block must be valid and disabled")
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"scheme", func(c *Config) { c.Broker = "mqtt://b:1883" }, "scheme"},
		{"not a url", func(c *Config) { c.Broker = "tcp://b:1883/%zz" }, "not a URL"},
		{"no host", func(c *Config) { c.Broker = "tcp://:1883" }, "no host"},
		{"userinfo", func(c *Config) { c.Broker = "tls://u:secret@b:8883" }, "password_file"},
		{"password without user", func(c *Config) { c.Username = ""; c.PasswordFile = "/p" }, "username is empty"},
		{"cert without key", func(c *Config) { c.CertFile = "/c" }, "go together"},
		{"ca on plain tcp", func(c *Config) { c.Broker = "tcp://b:1883"; c.CAFile = "/ca" }, "does not use TLS"},
		{"wildcard root", func(c *Config) { c.TopicRoot = "a/+" }, "wildcard"},
		{"empty level", func(c *Config) { c.TopicRoot = "a//b" }, "empty level"},
		{"trailing slash", func(c *Config) { c.TopicRoot = "hl7edge/" }, "empty level"},
		{"interval", func(c *Config) { c.HealthInterval = units.Duration(100 * time.Millisecond) }, "health_interval"},
		{"keepalive low", func(c *Config) { c.KeepAlive = units.Duration(time.Second) }, "keepalive"},
		{"keepalive high", func(c *Config) { c.KeepAlive = units.Duration(20 * time.Hour) }, "keepalive"},
		{"client id", func(c *Config) { c.ClientID = "a\nb" }, "client_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Broker: "tls://b:8883", Username: "u"}
			c.SetDefaults()
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want it to mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Fatalf("Validate repeats the password: %v", err)
			}
		})
	}
	for _, ok := range []string{"tcp://b:1883", "ssl://b:8883", "tls://b:8883", "ws://b/mqtt", "wss://b:443/mqtt", "TLS://b:8883"} {
		c := Config{Broker: ok}
		c.SetDefaults()
		if err := c.Validate(); err != nil {
			t.Errorf("broker %s: %v", ok, err)
		}
	}
}

func TestPasswordFile(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(p, []byte("s3 cret\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readPassword(p)
	if err != nil || got != "s3 cret" {
		t.Fatalf("readPassword = %q, %v", got, err)
	}
}

func TestTLSConfig(t *testing.T) {
	t.Parallel()
	c := Config{Broker: "tls://b:8883"}
	tc, err := c.tlsConfig()
	if err != nil {
		t.Fatal(err)
	}
	if tc.MinVersion < 0x0303 || tc.InsecureSkipVerify || tc.RootCAs == nil {
		t.Fatalf("tls config: min %x insecure %v roots %v", tc.MinVersion, tc.InsecureSkipVerify, tc.RootCAs != nil)
	}
}
