package mllp

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// Listener defaults, as sample.yaml beside this file documents them.
const (
	DefaultMaxConnections = 64
	// DefaultMaxConnectionsPerPeer leaves room for an interface engine
	// that opens several connections, not for one address to fill the port.
	DefaultMaxConnectionsPerPeer = 16
	DefaultIdleTimeout           = 5 * time.Minute
	// DefaultFirstFrameTimeout is how long a new connection has to deliver
	// its first complete frame; real senders connect because they have a
	// message to send.
	DefaultFirstFrameTimeout = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
)

// Limits that Validate enforces so that a typo cannot starve the box.
const (
	minMessageBytes = 256     // room for any real MSH segment, needed to answer AR
	maxMessageBytes = 1 << 30 // each connection may hold this much in memory
	maxConnections  = 10000
)

// ListenerConfig is one MLLP listening port (a source of type mllp). Its keys
// sit beside the source's name and type in the sources list.
type ListenerConfig struct {
	Listen         string `yaml:"listen"`
	MaxConnections int    `yaml:"max_connections"`
	// MaxConnectionsPerPeer bounds the connections from one IP address,
	// so one misbehaving or hostile host cannot take every slot.
	MaxConnectionsPerPeer int            `yaml:"max_connections_per_peer"`
	MaxMessageBytes       units.Size     `yaml:"max_message_bytes"`
	IdleTimeout           units.Duration `yaml:"idle_timeout"`
	// FirstFrameTimeout bounds the wait for a new connection's first
	// complete frame (the TLS handshake included).
	FirstFrameTimeout units.Duration `yaml:"first_frame_timeout"`
	// WriteTimeout bounds writing one ACK, so a peer that stops reading
	// cannot hold a connection (and its goroutine) forever.
	WriteTimeout units.Duration `yaml:"write_timeout"`
	TLS          ServerTLS      `yaml:"tls"`
}

// ServerTLS turns on TLS for a listener when CertFile and KeyFile are set;
// ClientCAFile additionally requires every client to present a certificate
// issued by one of those CAs.
type ServerTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// Enabled says whether the listener speaks TLS.
func (t ServerTLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != "" }

// SetDefaults fills unset (zero) fields with the defaults.
func (c *ListenerConfig) SetDefaults() {
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnectionsPerPeer == 0 {
		c.MaxConnectionsPerPeer = min(DefaultMaxConnectionsPerPeer, c.MaxConnections)
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = units.Duration(DefaultIdleTimeout)
	}
	if c.FirstFrameTimeout == 0 {
		c.FirstFrameTimeout = units.Duration(min(DefaultFirstFrameTimeout, c.IdleTimeout.D()))
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = units.Duration(DefaultWriteTimeout)
	}
}

// Validate checks the configuration after SetDefaults. It does not open
// the TLS files (NewServer does), so a config can be checked on another
// machine.
// MessageLimit is max_message_bytes (component.MessageLimiter).
func (c *ListenerConfig) MessageLimit() int64 { return int64(c.MaxMessageBytes) }

func (c *ListenerConfig) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("listen is empty: set host:port, for example 0.0.0.0:2575"))
	} else if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		errs = append(errs, fmt.Errorf("listen %q is not host:port: write it like 0.0.0.0:2575 or [::]:2575", c.Listen))
	} else if err := checkPort("listen", c.Listen, port, 0); err != nil { // 0: the kernel picks one (tests)
		errs = append(errs, err)
	}
	if c.MaxConnections < 1 || c.MaxConnections > maxConnections {
		errs = append(errs, fmt.Errorf("max_connections %d is out of range: use 1 to %d (default %d)", c.MaxConnections, maxConnections, DefaultMaxConnections))
	}
	if c.MaxConnectionsPerPeer < 1 || c.MaxConnectionsPerPeer > c.MaxConnections {
		errs = append(errs, fmt.Errorf("max_connections_per_peer %d is out of range: use 1 to max_connections (%d); default %d", c.MaxConnectionsPerPeer, c.MaxConnections, DefaultMaxConnectionsPerPeer))
	}
	if c.MaxMessageBytes < minMessageBytes || c.MaxMessageBytes > maxMessageBytes {
		errs = append(errs, fmt.Errorf("max_message_bytes %s is out of range: use %s to %s (default %s)",
			c.MaxMessageBytes, units.Size(minMessageBytes), units.Size(maxMessageBytes), units.Size(DefaultMaxMessageBytes)))
	}
	if c.IdleTimeout < units.Duration(time.Millisecond) {
		errs = append(errs, fmt.Errorf("idle_timeout %s is too short: use at least 1ms (default %s)", c.IdleTimeout, DefaultIdleTimeout))
	}
	if c.FirstFrameTimeout < units.Duration(time.Millisecond) || c.FirstFrameTimeout > c.IdleTimeout {
		errs = append(errs, fmt.Errorf("first_frame_timeout %s is out of range: use 1ms to idle_timeout (%s); default %s", c.FirstFrameTimeout, c.IdleTimeout, DefaultFirstFrameTimeout))
	}
	if c.WriteTimeout < units.Duration(time.Millisecond) {
		errs = append(errs, fmt.Errorf("write_timeout %s is too short: use at least 1ms (default %s)", c.WriteTimeout, DefaultWriteTimeout))
	}
	if t := c.TLS; t.Enabled() && (t.CertFile == "" || t.KeyFile == "") {
		errs = append(errs, errors.New("tls needs both cert_file and key_file (client_ca_file alone cannot serve TLS): set both, or clear all three for plain TCP"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mllp listener: %w", err)
	}
	return nil
}

// serverTLSConfig loads the listener's certificate and client CAs.
func (t ServerTLS) serverTLSConfig() (*tls.Config, error) {
	if !t.Enabled() {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls cert_file %s / key_file %s: %w (both must be PEM and belong together)", t.CertFile, t.KeyFile, err)
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if t.ClientCAFile != "" {
		pool, err := loadPool(t.ClientCAFile, "client_ca_file")
		if err != nil {
			return nil, err
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

// loadPool reads PEM certificates into a new pool.
func loadPool(path, key string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if err := appendPEM(pool, path, key); err != nil {
		return nil, err
	}
	return pool, nil
}

// appendPEM adds the PEM certificates in path (config key key) to pool.
func appendPEM(pool *x509.CertPool, path, key string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("tls %s: %w", key, err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("tls %s %s holds no PEM certificate: give a file with one or more BEGIN CERTIFICATE blocks", key, path)
	}
	return nil
}

// checkPort refuses a port that is not a number from least to 65535: the
// address would otherwise pass the check and fail only when the daemon
// starts (or, for a destination, at the first delivery).
func checkPort(key, addr, port string, least int) error {
	n, err := strconv.Atoi(port)
	if err != nil || n < least || n > 65535 {
		return fmt.Errorf("%s %q: port %s is not a number from %d to 65535", key, addr, port, least)
	}
	return nil
}
