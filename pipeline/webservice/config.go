package webservice

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// Defaults (docs/protocol.md, "Back-off and ordering"; sample.yaml beside this file).
const (
	DefaultSessionLifetime = 15 * time.Minute
	DefaultMaxBackoff      = 5 * time.Minute
	DefaultTimeout         = 30 * time.Second
	DefaultFrequency       = 20 * time.Second
)

// Peer holds the keys a destination and a source share: who the web service
// is, how this gateway logs on to it, and which URLs it may be sent to.
// Both configurations embed it inline, so the YAML stays flat.
type Peer struct {
	URL               string         `yaml:"url"`                 // the ping (starting) URL
	LogonID           string         `yaml:"logon_id"`            //
	PasswordFile      string         `yaml:"password_file"`       // the secret lives in a file, never in the YAML
	CAFile            string         `yaml:"ca_file"`             // extra roots; the system roots always apply
	CertFile          string         `yaml:"cert_file"`           // client certificate for mutual TLS (with key_file)
	KeyFile           string         `yaml:"key_file"`            //
	AllowedHosts      []string       `yaml:"allowed_hosts"`       // glob patterns the URLs handed out by a ping must match
	AllowInsecureHTTP bool           `yaml:"allow_insecure_http"` // lab benches only: accept http:// URLs
	SessionLifetime   units.Duration `yaml:"session_lifetime"`    // how long a session's URLs are reused without pinging
	MaxBackoff        units.Duration `yaml:"max_backoff"`         // cap of the exponential back-off
	Timeout           units.Duration `yaml:"timeout"`             // one request, connect to last byte of the reply
	ComputerName      string         `yaml:"computer_name"`       // COMPUTERNAME; default: the device name
	PMVersion         string         `yaml:"pm_version"`          // PMVERSION; default: the firmware version
}

func (c *Peer) setDefaults() {
	setDuration(&c.SessionLifetime, DefaultSessionLifetime)
	setDuration(&c.MaxBackoff, DefaultMaxBackoff)
	setDuration(&c.Timeout, DefaultTimeout)
}

// validate checks the shared keys. httpsOnly: the starting URL must be
// https unless allow_insecure_http is set.
func (c *Peer) validate(httpsOnly bool) []error {
	var errs []error
	errs = append(errs, validateURL("url", c.URL, httpsOnly && !c.AllowInsecureHTTP))
	if c.LogonID == "" {
		errs = append(errs, errors.New("logon_id is empty: set the logon the web service gave this gateway"))
	}
	if c.PasswordFile == "" {
		errs = append(errs, errors.New("password_file is empty: name a file holding the web-service password"))
	}
	errs = append(errs, validateTLSFiles(c.CAFile, c.CertFile, c.KeyFile, c.PasswordFile)...)
	errs = append(errs, validatePatterns(c.AllowedHosts)...)
	errs = append(errs, validateDurations(c.SessionLifetime, c.MaxBackoff, c.Timeout)...)
	return errs
}

// DestinationConfig is one `type: webservice` destination (ping/post). The
// keys shared with other destination types (name, type, match,
// max_attempts) belong to the pipeline's config, not here.
type DestinationConfig struct {
	Peer `yaml:",inline"`
	// RejectErrorCodes are the ERRORCODEs of an EXCEPTION to a post that
	// refuse the message itself, so that sending it again cannot help: the
	// destination's on_reject then holds it or moves it to the dead
	// letters. The protocol leaves codes to the server; the default is the
	// reference web service's (docs/protocol.md). An EXCEPTION to a ping is
	// never about a message.
	RejectErrorCodes []string `yaml:"reject_errorcodes"`
}

// DefaultRejectErrorCodes are the reference web service's codes for a post
// whose message it cannot take: an unusable ID, two IDs that differ, a
// message empty or not Base64.
var DefaultRejectErrorCodes = []string{"4", "5", "6"}

// SetDefaults fills the keys left unset; an explicit empty
// reject_errorcodes ([]) stays empty: no EXCEPTION refuses a message.
func (c *DestinationConfig) SetDefaults() {
	if c.RejectErrorCodes == nil {
		c.RejectErrorCodes = slices.Clone(DefaultRejectErrorCodes)
	}
	c.setDefaults()
}

// Validate checks the configuration without touching the network; it does
// check that the files it names can be read.
func (c *DestinationConfig) Validate() error {
	// The ping carries the password, so the starting URL follows the same
	// rule as the URLs a ping hands out.
	return errors.Join(c.validate(true)...)
}

// SourceConfig is one `type: webservice` source (ping/mailbox/get/ack).
// Its ping URL may be http:// (the ping carries no password); the mailbox,
// get and ack URLs it hands out follow allowed_hosts and allow_insecure_http.
type SourceConfig struct {
	Peer      `yaml:",inline"`
	Frequency units.Duration `yaml:"frequency"` // mailbox polling interval, whole seconds
	Reping    bool           `yaml:"reping"`    // ping before every mailbox poll
	// MaxMessageBytes is the largest message a get may bring; it sets how
	// much of a get reply is read (MaxGetReplyBytes).
	MaxMessageBytes units.Size `yaml:"max_message_bytes"`
}

// Limits of max_message_bytes.
const (
	DefaultMaxMessageBytes = 1 << 20
	minMessageBytes        = 256
	maxMessageBytes        = 64 << 20
)

// SetDefaults fills the durations left at zero.
func (c *SourceConfig) SetDefaults() {
	setDuration(&c.Frequency, DefaultFrequency)
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	c.setDefaults()
}

// Validate checks the configuration without touching the network.
// MessageLimit is max_message_bytes (component.MessageLimiter).
func (c *SourceConfig) MessageLimit() int64 { return int64(c.MaxMessageBytes) }

func (c *SourceConfig) Validate() error {
	errs := c.validate(false)
	if f := c.Frequency.D(); f < time.Second || f%time.Second != 0 {
		errs = append(errs, fmt.Errorf("frequency %s: want whole seconds, at least 1s (the protocol counts in seconds)", f))
	}
	if m := c.MaxMessageBytes; m < minMessageBytes || m > maxMessageBytes {
		errs = append(errs, fmt.Errorf("max_message_bytes %s: use %s to %s (default %s)", m,
			units.Size(minMessageBytes), units.Size(maxMessageBytes), units.Size(DefaultMaxMessageBytes)))
	}
	return errors.Join(errs...)
}

func setDuration(d *units.Duration, def time.Duration) {
	if *d == 0 {
		*d = units.Duration(def)
	}
}

func validateDurations(lifetime, backoff, timeout units.Duration) []error {
	var errs []error
	if lifetime.D() < time.Second {
		errs = append(errs, fmt.Errorf("session_lifetime %s: want at least 1s (default %s)", lifetime, DefaultSessionLifetime))
	}
	if backoff.D() < time.Second {
		errs = append(errs, fmt.Errorf("max_backoff %s: want at least 1s, the first back-off step (default %s)", backoff, DefaultMaxBackoff))
	}
	if timeout.D() < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("timeout %s: want at least 100ms (default %s)", timeout, DefaultTimeout))
	}
	return errs
}

func validateURL(key, raw string, httpsOnly bool) error {
	if raw == "" {
		return fmt.Errorf("%s is empty: set the web service's ping URL", key)
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return fmt.Errorf("%s %q: want an absolute URL such as https://his.example.org/hl7/ping", key, raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if httpsOnly {
			return fmt.Errorf("%s %q: the ping carries the password, so it must be https (set allow_insecure_http only on a lab bench)", key, raw)
		}
	default:
		return fmt.Errorf("%s %q: scheme %q, want https", key, raw, u.Scheme)
	}
	if u.User != nil {
		return fmt.Errorf("%s: credentials in the URL are not used; put the password in password_file", key)
	}
	return nil
}

func validateTLSFiles(caFile, certFile, keyFile, passwordFile string) []error {
	var errs []error
	if (certFile == "") != (keyFile == "") {
		errs = append(errs, errors.New("cert_file and key_file go together: set both for mutual TLS, or neither"))
	}
	for _, f := range []struct{ key, path string }{{"ca_file", caFile}, {"cert_file", certFile}, {"key_file", keyFile}, {"password_file", passwordFile}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("%s %s does not exist: create it or correct the path", f.key, f.path))
		} else if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", f.key, f.path, errors.Unwrap(err)))
		}
	}
	return errs
}

func validatePatterns(patterns []string) []error {
	var errs []error
	for _, p := range patterns {
		if strings.TrimSpace(p) == "" {
			errs = append(errs, errors.New("allowed_hosts has an empty pattern: remove it or write a host such as *.example.org"))
			continue
		}
		if _, err := path.Match(strings.ToLower(p), ""); err != nil {
			errs = append(errs, fmt.Errorf("allowed_hosts pattern %q: %w; write a glob such as *.example.org", p, err))
		}
	}
	return errs
}

// FormatFrequency writes a polling interval the way the data-source ping
// carries it: "20 Seconds", "5 Minutes", "1 Hours" (the largest exact unit).
func FormatFrequency(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	switch {
	case s%3600 == 0:
		return fmt.Sprintf("%d Hours", s/3600)
	case s%60 == 0:
		return fmt.Sprintf("%d Minutes", s/60)
	}
	return fmt.Sprintf("%d Seconds", s)
}

// FormatPMVersion turns a firmware version such as "v1.4.2" or
// "1.4.2-3-gabcdef" into the four numbers PMVERSION carries ("1.4.2.0",
// "1.4.2.3"); a version without leading numbers becomes "0.0.0.0".
func FormatPMVersion(v string) string {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	var nums []string
	for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == '.' || r == '-' || r == '+' }) {
		if len(nums) == 4 {
			break
		}
		end := 0
		for end < len(part) && part[end] >= '0' && part[end] <= '9' {
			end++
		}
		if end == 0 || end != len(part) {
			if end > 0 {
				nums = append(nums, part[:end])
			}
			break
		}
		nums = append(nums, part)
	}
	for len(nums) < 4 {
		nums = append(nums, "0")
	}
	return strings.Join(nums, ".")
}
