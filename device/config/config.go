// Package config reads the one YAML file that configures a gateway
// (/etc/hl7edge/hl7edge.yaml). It refuses unknown keys and names the line of
// every mistake, because the person reading the error is at a hospital with
// no developer nearby.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/hl7edge/hl7edge/board"
	"github.com/hl7edge/hl7edge/device/firmware"
	"github.com/hl7edge/hl7edge/device/mqttagent"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/gateway"
)

// DefaultPath is where the package installs the configuration.
const DefaultPath = "/etc/hl7edge/hl7edge.yaml"

// Device is the `device:` block.
type Device struct {
	ID    string `yaml:"id"`    // default: hostname; used in MQTT topics and as COMPUTERNAME
	Board string `yaml:"board"` // sim | rpi | sysfs
	// Labels (site: north, ring: canary) are published in the status and
	// health so that fleet tools can select boxes by them.
	Labels map[string]string `yaml:"labels"`
}

// Admin is the `admin:` block.
type Admin struct {
	Socket string `yaml:"socket"`
}

// Log is the `log:` block.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // text | json
}

// Config is the whole file.
type Config struct {
	Device       Device                `yaml:"device"`
	Spool        Spool                 `yaml:"spool"`
	Admin        Admin                 `yaml:"admin"`
	Log          Log                   `yaml:"log"`
	Sources      []gateway.Source      `yaml:"sources"`
	Destinations []gateway.Destination `yaml:"destinations"`
	MQTT         mqttagent.Config      `yaml:"mqtt"`
	LEDs         board.LEDConfig       `yaml:"leds"`
	Trust        trust.Config          `yaml:"trust"`
	Firmware     firmware.Config       `yaml:"firmware"`
	// Path is the file it was read from.
	Path string `yaml:"-"`
	// Types are the source and destination types the file may name
	// (gateway.DefaultTypes when nil).
	Types *component.Types `yaml:"-"`
}

// Load reads and validates a file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w (pass --config FILE; the packaged default is %s)", err, DefaultPath)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.Path = path
	return c, nil
}

// Parse reads and validates YAML text with the product's types.
func Parse(b []byte) (*Config, error) { return ParseTypes(b, gateway.DefaultTypes()) }

// ParseTypes reads and validates YAML text whose sources and destinations
// may name the types in types.
func ParseTypes(b []byte, types *component.Types) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, syntaxMistake(b, err) // at the line that holds it, with a hint
	}
	ix := indexKeys(&doc)
	c := &Config{Types: types}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, ix.placeAll(tidyYAMLError(err))
		}
		// Keep going: what did decode is validated too, so one run of
		// `config check` lists every mistake.
		c.SetDefaults()
		return nil, ix.placeAll(tidyYAMLError(err), c.Validate())
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, ix.placeAll(err)
	}
	return c, nil
}

// tidyYAMLError drops yaml.v3's Go type names, which mean nothing to an operator.
func tidyYAMLError(err error) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = typeNames.ReplaceAllString(msg, "")
	lines := strings.Split(msg, "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return errors.New(strings.Join(lines, "\n"))
}

var typeNames = regexp.MustCompile(` in type [\w.\[\]*]+`)

// SetDefaults fills what is left out.
func (c *Config) SetDefaults() {
	if c.Device.ID == "" {
		if h, err := os.Hostname(); err == nil {
			c.Device.ID = strings.ToLower(h)
		}
	}
	if c.Device.Board == "" {
		c.Device.Board = "sim"
	}
	if c.Admin.Socket == "" {
		c.Admin.Socket = "/run/hl7edge/admin.sock"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	c.Spool.SetDefaults()
	c.MQTT.SetDefaults()
	c.Firmware.SetDefaults(c.StateDir())
}

var deviceID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate checks the whole file; every mistake is reported, not just the first.
func (c *Config) Validate() error {
	var errs []error
	if !deviceID.MatchString(c.Device.ID) {
		errs = append(errs, fmt.Errorf("device.id %q: use 1-63 letters, digits, '.', '-' or '_' (it is an MQTT topic level)", c.Device.ID))
	}
	errs = append(errs, checkLabels(c.Device.Labels)...)
	switch c.Device.Board {
	case "sim", "rpi", "sysfs":
	default:
		errs = append(errs, fmt.Errorf("device.board %q: use sim, rpi or sysfs", c.Device.Board))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q: use debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format %q: use text or json", c.Log.Format))
	}
	if err := c.Spool.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := gateway.Validate(c.Types, c.Sources, c.Destinations); err != nil {
		errs = append(errs, err)
	}
	if c.MQTT.Enabled() {
		if err := c.MQTT.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("mqtt: %w", err))
		}
	}
	if err := c.Trust.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Firmware.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// StateDir is where the daemon keeps its small state files next to the
// spool (the MQTT session counter, the replay record of signed commands).
func (c *Config) StateDir() string { return filepath.Dir(filepath.Clean(c.Spool.Dir)) }

// Gateway is the pipeline part of the configuration.
func (c *Config) Gateway(version string) gateway.Config {
	return gateway.Config{Spool: c.Spool.Storage(), Sources: c.Sources, Destinations: c.Destinations, DeviceID: c.Device.ID, Version: version, Types: c.Types}
}
