package mllp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// DefaultTimeout bounds one delivery (connecting included).
const DefaultTimeout = 30 * time.Second

// DestinationConfig is a destination of type mllp: a downstream receiver
// that takes messages over MLLP and answers each with an HL7 ACK.
type DestinationConfig struct {
	Address string    `yaml:"address"`
	TLS     ClientTLS `yaml:"tls"`
	// Timeout bounds one delivery: connecting, writing and waiting for
	// the ACK.
	Timeout units.Duration `yaml:"timeout"`
	// Connections is how many connections the receiver accepts from this
	// gateway at once. Above 1 the destination can take `lanes` up to it:
	// each lane's messages go one at a time over one connection.
	Connections int `yaml:"connections"`
}

// MaxConnections bounds connections.
const MaxConnections = 64

// ClientTLS turns on TLS to the receiver when Enabled or any other field is
// set. The receiver's certificate is always verified, against the system
// roots plus CAFile; CertFile and KeyFile give a client certificate for
// receivers that require one.
type ClientTLS struct {
	Enabled    bool   `yaml:"enabled"`
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"` // default: the host in address
}

// On says whether TLS is to be used.
func (t ClientTLS) On() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != ""
}

// SetDefaults fills unset fields.
func (c *DestinationConfig) SetDefaults() {
	if c.Timeout == 0 {
		c.Timeout = units.Duration(DefaultTimeout)
	}
	if c.Connections == 0 {
		c.Connections = 1
	}
}

// MaxLanes is how many deliveries may run at once: one per connection.
func (c *DestinationConfig) MaxLanes() int { return max(c.Connections, 1) }

// Validate checks the configuration after SetDefaults; it does not read
// the TLS files (NewOutput does).
func (c *DestinationConfig) Validate() error {
	var errs []error
	if c.Address == "" {
		errs = append(errs, errors.New("address is empty: set the receiver's host:port, for example 10.20.0.5:2575"))
	} else if host, port, err := net.SplitHostPort(c.Address); err != nil || host == "" || port == "" {
		errs = append(errs, fmt.Errorf("address %q is not host:port: write it like 10.20.0.5:2575 or lis.example.org:2575", c.Address))
	} else if err := checkPort("address", c.Address, port, 1); err != nil {
		errs = append(errs, err)
	}
	if c.Timeout < units.Duration(time.Millisecond) {
		errs = append(errs, fmt.Errorf("timeout %s is too short: use at least 1ms (default %s)", c.Timeout, DefaultTimeout))
	}
	if c.Connections < 1 || c.Connections > MaxConnections {
		errs = append(errs, fmt.Errorf("connections %d: use 1 (the default) up to %d, no more than the receiver accepts at once", c.Connections, MaxConnections))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("tls cert_file and key_file go together: set both for a client certificate, or neither"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mllp destination: %w", err)
	}
	return nil
}

// clientTLSConfig builds the TLS configuration, or nil for plain TCP.
func (t ClientTLS) clientTLSConfig() (*tls.Config, error) {
	if !t.On() {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		roots, err := x509.SystemCertPool()
		if err != nil || roots == nil {
			roots = x509.NewCertPool() // a bare board may have no system roots
		}
		if err := appendPEM(roots, t.CAFile, "ca_file"); err != nil {
			return nil, err
		}
		conf.RootCAs = roots
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls cert_file %s / key_file %s: %w (both must be PEM and belong together)", t.CertFile, t.KeyFile, err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

// Output delivers messages to one MLLP receiver over kept-open
// connections, one by default. It implements flow.Output. Each delivery
// holds one connection from sending to its ACK, since MLLP answers in order
// on a connection; with connections above 1 as many deliveries run at once.
type Output struct {
	name string
	cfg  DestinationConfig
	tls  *tls.Config
	log  *slog.Logger
	comp *health.Component // counts refusals (the FAULT LED's code 2); may be nil

	slots chan *slot // idle connection slots; a delivery holds one

	mu     sync.Mutex
	open   map[*Client]bool // every connected client, for Close
	closed bool
}

// slot is one connection a delivery may use; c is nil until it connects.
type slot struct{ c *Client }

var _ flow.Output = (*Output)(nil)

// NewOutput checks cfg (defaults applied to a copy) and loads its TLS files.
// It does not connect: the first Deliver does. comp, when not nil, counts
// the receiver's refusals (AE, AR) as health.CounterRefused.
func NewOutput(name string, cfg DestinationConfig, log *slog.Logger, comp *health.Component) (*Output, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tlsConf, err := cfg.TLS.clientTLSConfig()
	if err != nil {
		return nil, err
	}
	if log == nil {
		return nil, errors.New("a logger is required")
	}
	o := &Output{name: name, cfg: cfg, tls: tlsConf, log: log.With("destination", name, "address", cfg.Address), comp: comp,
		slots: make(chan *slot, cfg.Connections), open: map[*Client]bool{}}
	for range cfg.Connections {
		o.slots <- &slot{}
	}
	return o, nil
}

// errReceiver marks errors where the receiver answered but not positively,
// as opposed to transport failures.
var errReceiver = errors.New("receiver did not accept the message")

// Deliver sends m and reads the receiver's ACK. It returns nil for AA or
// CA; a retryable error for AE or CE, a transport failure, a timeout, an
// unreadable ACK or one whose MSA-2 names another message; and an error
// wrapping flow.ErrPermanent for AR or CR. The receiver's own text (MSA-3,
// ERR) is left out of errors because it may quote the message.
func (o *Output) Deliver(ctx context.Context, m *flow.Message) error {
	var sl *slot
	select {
	case sl = <-o.slots:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { o.slots <- sl }()

	parsed, err := hl7.Parse(m.Raw)
	if err != nil {
		return fmt.Errorf("mllp destination %q: message %s cannot be read, so its ACK could not be matched: %w: %w", o.name, m.GUID, err, flow.ErrPermanent)
	}
	ctlID := parsed.Header().ControlID
	what := fmt.Sprintf("mllp destination %q: message %s (control ID %s)", o.name, m.GUID, ctlID)

	ctx, cancel := context.WithTimeout(ctx, o.cfg.Timeout.D())
	defer cancel()
	var (
		raw []byte
		c   *Client
	)
	for retried := false; ; retried = true {
		var reused bool
		c, reused, err = o.connect(ctx, sl)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		raw, err = c.Send(ctx, m.Raw)
		if err == nil {
			break
		}
		o.drop(sl, "send failed")
		// Receivers close idle connections; finding that out only on
		// the next send is normal, not a failure worth a back-off.
		// Resending is safe: delivery is at least once.
		if reused && !retried && peerWentAway(err) && ctx.Err() == nil {
			continue
		}
		return fmt.Errorf("%s: %w (will reconnect and retry; timeout %s)", what, err, o.cfg.Timeout)
	}
	code, acked, _, err := hl7.ParseACK(raw)
	if err != nil {
		o.drop(sl, "unreadable ACK")
		return fmt.Errorf("%s: %w", what, err)
	}
	if strings.TrimSpace(acked) != strings.TrimSpace(ctlID) {
		// The stream is out of step (a late ACK of something else):
		// start over on a fresh connection.
		o.drop(sl, "ACK for another message")
		return fmt.Errorf("%s: the ACK answers control ID %q, not this message: will reconnect and retry", what, truncateID(acked))
	}
	switch code {
	case "AA", "CA":
		return nil
	}
	// The receiver is up but says no: with the destination down this is
	// the FAULT LED's "upstream refusing", not a link problem.
	if o.comp != nil {
		o.comp.Add(health.CounterRefused, 1)
	}
	switch code {
	case "AE", "CE":
		return fmt.Errorf("%s: %w: it answered %s (error, retry later); its reason is in the receiver's log", what, errReceiver, code)
	default: // AR, CR: ParseACK accepts no other code
		return fmt.Errorf("%s: %w: it answered %s (rejected; resending it unchanged will not help): %w", what, errReceiver, code, flow.ErrPermanent)
	}
}

// peerWentAway says whether err looks like a connection the receiver had
// already closed.
func peerWentAway(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// connect returns the slot's open connection (reused) or dials a new one.
func (o *Output) connect(ctx context.Context, sl *slot) (c *Client, reused bool, err error) {
	o.mu.Lock()
	closed := o.closed
	o.mu.Unlock()
	if closed {
		return nil, false, fmt.Errorf("destination closed: %w", net.ErrClosed)
	}
	if sl.c != nil {
		return sl.c, true, nil
	}
	c, err = Dial(ctx, o.cfg.Address, o.tls)
	if err != nil {
		return nil, false, fmt.Errorf("%w (is the receiver up and the address right?)", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		c.Close()
		return nil, false, fmt.Errorf("destination closed: %w", net.ErrClosed)
	}
	sl.c = c
	o.open[c] = true
	o.log.Info("MLLP destination connected", "tls", o.tls != nil, "connections", len(o.open))
	return c, false, nil
}

// drop closes the slot's connection so its next delivery reconnects.
func (o *Output) drop(sl *slot, why string) {
	c := sl.c
	if c == nil {
		return
	}
	sl.c = nil
	o.mu.Lock()
	delete(o.open, c)
	o.mu.Unlock()
	c.Close()
	o.log.Warn("MLLP destination connection dropped; reconnecting on the next delivery", "why", why)
}

// Close closes the connections; a delivery in progress fails and later
// ones are refused.
func (o *Output) Close() error {
	o.mu.Lock()
	open := o.open
	o.open, o.closed = map[*Client]bool{}, true
	o.mu.Unlock()
	var errs []error
	for c := range open {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// truncateID keeps a peer's control ID short enough for a log line.
func truncateID(s string) string {
	const limit = 64
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}
