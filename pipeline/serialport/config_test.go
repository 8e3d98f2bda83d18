package serialport

import (
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{Device: "/dev/ttyUSB0", Framing: FramingLIS01}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Baud != 9600 || c.DataBits != 8 || c.Parity != "none" || c.StopBits != 1 ||
		c.MaxMessageBytes != 1<<20 || c.ReopenInterval.D() != DefaultReopenInterval || c.ACKTimeout.D() != DefaultACKTimeout {
		t.Fatalf("defaults: %+v", c)
	}
}

// TestConfigErrors: each mistake is reported naming its key.
func TestConfigErrors(t *testing.T) {
	cases := map[string]func(*Config){
		"device":            func(c *Config) { c.Device = "" },
		"absolute path":     func(c *Config) { c.Device = "ttyUSB0" },
		"baud":              func(c *Config) { c.Baud = 12345 },
		"data_bits":         func(c *Config) { c.DataBits = 9 },
		"parity":            func(c *Config) { c.Parity = "mark" },
		"stop_bits":         func(c *Config) { c.StopBits = 3 },
		"framing is empty":  func(c *Config) { c.Framing = "" },
		"framing \"astm\"":  func(c *Config) { c.Framing = "astm" },
		"max_message_bytes": func(c *Config) { c.MaxMessageBytes = 10 },
		"reopen_interval":   func(c *Config) { c.ReopenInterval = 1 },
	}
	for key, mutate := range cases {
		c := Config{Device: "/dev/ttyUSB0", Framing: FramingMLLP}
		c.SetDefaults()
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: Validate() = %v, want an error naming %s", key, err, key)
		}
	}
}

// TestSampleConfig keeps sample.yaml honest: it decodes with no unknown
// keys and every entry validates.
func TestSampleConfig(t *testing.T) {
	type entry struct {
		Name   string `yaml:"name"`
		Type   string `yaml:"type"`
		Config `yaml:",inline"`
	}
	var doc struct {
		Sources      []entry `yaml:"sources"`
		Destinations []entry `yaml:"destinations"`
	}
	f, err := os.Open("sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	all := append(doc.Sources, doc.Destinations...)
	if len(all) != 2 {
		t.Fatalf("%d entries", len(all))
	}
	for _, e := range all {
		e.SetDefaults()
		if err := e.Validate(); err != nil {
			t.Errorf("%s: %v", e.Name, err)
		}
	}
	if doc.Sources[0].Framing != FramingLIS01 || doc.Sources[0].MaxMessageBytes != 1<<20 {
		t.Fatalf("source decoded as %+v", doc.Sources[0].Config)
	}
}

func TestNewSourceChecks(t *testing.T) {
	if _, err := NewSource("x", Config{Device: "/dev/x", Framing: "mllp"}, &memIntake{}, Options{}); err == nil {
		t.Fatal("accepted missing Log and Health")
	}
	if _, err := NewDestination("x", Config{Framing: "mllp"}, Options{}); err == nil || !strings.Contains(err.Error(), "device") {
		t.Fatalf("NewDestination = %v, want the device error", err)
	}
}
