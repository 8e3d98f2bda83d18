package mqttagent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// Config is the `mqtt:` block of the configuration file.
type Config struct {
	// Broker is the broker URL; empty disables the agent.
	Broker       string `yaml:"broker"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// CAFile adds roots to the system roots for verifying the broker.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are an optional client certificate.
	CertFile       string         `yaml:"cert_file"`
	KeyFile        string         `yaml:"key_file"`
	TopicRoot      string         `yaml:"topic_root"`
	HealthInterval units.Duration `yaml:"health_interval"`
	// ClientID defaults to hl7edge-<device id>.
	ClientID  string         `yaml:"client_id"`
	KeepAlive units.Duration `yaml:"keepalive"`
}

// Defaults applied by SetDefaults.
const (
	DefaultTopicRoot      = "hl7edge"
	DefaultHealthInterval = 30 * time.Second
	DefaultKeepAlive      = 30 * time.Second
)

// Limits checked by Validate.
const (
	MinHealthInterval = time.Second
	MinKeepAlive      = 5 * time.Second
	// MaxKeepAlive is the largest keepalive MQTT 3.1.1 can express (a 16-bit count of seconds).
	MaxKeepAlive = 65535 * time.Second
	maxClientID  = 128
)

// Enabled says whether a broker is configured.
func (c *Config) Enabled() bool { return strings.TrimSpace(c.Broker) != "" }

// SetDefaults fills the keys left empty. The client ID default needs the
// device ID and is applied by New.
func (c *Config) SetDefaults() {
	if c.TopicRoot == "" {
		c.TopicRoot = DefaultTopicRoot
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = units.Duration(DefaultHealthInterval)
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = units.Duration(DefaultKeepAlive)
	}
}

var brokerSchemes = map[string]bool{"tcp": false, "ws": false, "ssl": true, "tls": true, "wss": true}

// UsesTLS says whether the broker URL asks for TLS (tls://, ssl://, wss://).
func (c *Config) UsesTLS() bool { return c.Enabled() && c.isTLS() }

// isTLS says whether the broker URL asks for TLS; only call it on a valid config.
func (c *Config) isTLS() bool {
	u, err := url.Parse(c.Broker)
	return err == nil && brokerSchemes[strings.ToLower(u.Scheme)]
}

// Validate checks the block after SetDefaults. A disabled block (no broker)
// is valid whatever else it holds.
func (c *Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	u, err := url.Parse(c.Broker)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("mqtt.broker %q is not a URL; write it as tls://host:8883 (schemes: tcp, ssl, tls, ws, wss)", c.Broker))
	case !hasKey(brokerSchemes, strings.ToLower(u.Scheme)):
		errs = append(errs, fmt.Errorf("mqtt.broker scheme %q is not supported; use one of tcp://, ssl://, tls://, ws://, wss://", u.Scheme))
	case u.User != nil:
		// Userinfo would put the password into logs and the config file.
		errs = append(errs, errors.New("mqtt.broker holds a user name or password; put the user in mqtt.username and the password in the file named by mqtt.password_file"))
	case u.Hostname() == "":
		errs = append(errs, fmt.Errorf("mqtt.broker %q names no host; write it as tls://host:8883", c.Broker))
	}
	tlsScheme := err == nil && brokerSchemes[strings.ToLower(u.Scheme)]
	if c.PasswordFile != "" && c.Username == "" {
		errs = append(errs, errors.New("mqtt.password_file is set but mqtt.username is empty; MQTT 3.1.1 sends a password only with a user name"))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("mqtt.cert_file and mqtt.key_file go together; set both for a client certificate, or neither"))
	}
	if err == nil && !tlsScheme {
		for key, v := range map[string]string{"ca_file": c.CAFile, "cert_file": c.CertFile, "key_file": c.KeyFile} {
			if v != "" {
				errs = append(errs, fmt.Errorf("mqtt.%s is set but broker %q does not use TLS; use tls:// or wss://, or remove mqtt.%s", key, c.Broker, key))
			}
		}
	}
	if err := validTopicRoot(c.TopicRoot); err != nil {
		errs = append(errs, err)
	}
	if d := c.HealthInterval.D(); d < MinHealthInterval {
		errs = append(errs, fmt.Errorf("mqtt.health_interval %s is below the minimum %s; use e.g. 30s", d, MinHealthInterval))
	}
	if d := c.KeepAlive.D(); d < MinKeepAlive || d > MaxKeepAlive {
		errs = append(errs, fmt.Errorf("mqtt.keepalive %s is outside %s..%s; use e.g. 30s", d, MinKeepAlive, MaxKeepAlive))
	}
	if len(c.ClientID) > maxClientID || strings.ContainsFunc(c.ClientID, isControl) {
		errs = append(errs, fmt.Errorf("mqtt.client_id must be printable and at most %d bytes; leave it empty for hl7edge-<device id>", maxClientID))
	}
	return errors.Join(errs...)
}

func hasKey(m map[string]bool, k string) bool { _, ok := m[k]; return ok }

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// validTopicRoot rejects what would make our topics wildcards or ambiguous.
func validTopicRoot(root string) error {
	if root == "" {
		return errors.New("mqtt.topic_root is empty; use e.g. hl7edge")
	}
	if strings.ContainsAny(root, "+#") || strings.ContainsFunc(root, isControl) {
		return fmt.Errorf("mqtt.topic_root %q holds a wildcard (+ #) or control character; use plain levels such as hl7edge or site/ward3", root)
	}
	for _, level := range strings.Split(root, "/") {
		if level == "" {
			return fmt.Errorf("mqtt.topic_root %q has an empty level (a leading, trailing or doubled /); write it as hl7edge or site/ward3", root)
		}
	}
	return nil
}

// validDeviceID checks the device ID as one topic level.
func validDeviceID(id string) error {
	if id == "" {
		return errors.New("device id is empty; set device.id (it names the MQTT topics)")
	}
	if len(id) > 64 || strings.ContainsAny(id, "/+#") || strings.ContainsFunc(id, isControl) {
		return errors.New("device id must be one MQTT topic level: at most 64 bytes, no / + # or control characters; fix device.id")
	}
	return nil
}

// readPassword reads the password file. The password itself never appears in an error.
func readPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("mqtt.password_file: %w", err)
	}
	p := strings.TrimRight(string(b), "\r\n")
	if p == "" {
		return "", fmt.Errorf("mqtt.password_file %s is empty; write the broker password into it (one line)", path)
	}
	if len(p) > 65535 {
		return "", fmt.Errorf("mqtt.password_file %s holds %d bytes; MQTT allows at most 65535", path, len(p))
	}
	return p, nil
}

// tlsConfig builds the broker TLS settings: verification on, TLS 1.2 or
// later, system roots plus ca_file, optional client certificate.
func (c *Config) tlsConfig() (*tls.Config, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.ca_file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt.ca_file %s holds no PEM certificate; give the CA certificate in PEM form", c.CAFile)
		}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt.cert_file %s / mqtt.key_file %s: %w", c.CertFile, c.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Connection is what another MQTT client of the fleet (hl7edge fleet)
// needs to reach the broker exactly as the agent does: the TLS settings
// (nil for tcp:// and ws://) and the password from password_file ("" when
// none). Call it after SetDefaults and Validate.
func (c *Config) Connection() (tlsCfg *tls.Config, password string, err error) {
	if c.PasswordFile != "" {
		if password, err = readPassword(c.PasswordFile); err != nil {
			return nil, "", err
		}
	}
	if c.isTLS() {
		if tlsCfg, err = c.tlsConfig(); err != nil {
			return nil, "", err
		}
	}
	return tlsCfg, password, nil
}

// Reach: the broker, judged like any other endpoint on a remote change, and
// the agent's credential files. A disabled agent reaches nothing.
func (c *Config) Reach() component.Reach {
	if !c.Enabled() {
		return component.Reach{}
	}
	ep := component.Endpoint{Key: "broker", Proto: "mqtt", TLS: c.UsesTLS(), CAFile: c.CAFile, ClientCert: c.CertFile, Secret: c.PasswordFile}
	if u, err := url.Parse(c.Broker); err == nil {
		def := "1883"
		if ep.TLS {
			def = "8883"
		}
		ep.Host, ep.Port = component.HostPort(u.Host, def)
	}
	r := component.Reach{Endpoints: []component.Endpoint{ep}}
	for _, f := range []component.File{{Key: "password_file", Path: c.PasswordFile, Secret: true}, {Key: "ca_file", Path: c.CAFile}, {Key: "cert_file", Path: c.CertFile}, {Key: "key_file", Path: c.KeyFile, Secret: true}} {
		if f.Path != "" {
			f.Kind = component.FileCredential
			r.Files = append(r.Files, f)
		}
	}
	return r
}
