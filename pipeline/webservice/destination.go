package webservice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

// Options are what the integrator supplies besides the YAML.
type Options struct {
	Log       *slog.Logger      // nil: discard
	Health    *health.Component // nil: a private component nobody reads
	DeviceID  string            // COMPUTERNAME unless the config sets computer_name; default the hostname
	PMVersion string            // firmware version ("v1.4.2" is sent as 1.4.2.0) unless the config sets pm_version
	Loop      *health.Loop      // optional liveness beacon, beaten by Source.Run
	Now       func() time.Time  // nil: time.Now; tests move the clock to expire sessions
	// Alarm, when set, is raised when a ping reply hands out a URL the
	// profile refuses: a spoofed or misconfigured ping server is an
	// operator's problem, not only a retry.
	Alarm func(kind, detail string)
	// Lanes is how many Deliver calls a destination's worker may make at
	// once (0 or 1: one at a time); as many connections are kept alive.
	Lanes int
}

// identity is how the gateway presents itself in every request.
type identity struct {
	logonID, password, pmVersion, computerName string
}

func newIdentity(logonID, passwordFile, cfgComputer, cfgVersion string, opts Options) (identity, error) {
	pw, err := readPassword(passwordFile)
	if err != nil {
		return identity{}, err
	}
	id := identity{logonID: logonID, password: pw, computerName: cfgComputer, pmVersion: cfgVersion}
	if id.computerName == "" {
		id.computerName = opts.DeviceID
	}
	if id.computerName == "" {
		id.computerName, _ = os.Hostname()
	}
	if id.pmVersion == "" {
		id.pmVersion = FormatPMVersion(opts.PMVersion)
	}
	return id, nil
}

// peer is what a destination and a source share: who we are to the web
// service, where it starts, which URLs it may hand out, and the connection.
type peer struct {
	id     identity
	start  *url.URL
	policy URLPolicy
	x      *exchanger
}

func newPeer(c Peer, opts Options) (peer, error) {
	id, err := newIdentity(c.LogonID, c.PasswordFile, c.ComputerName, c.PMVersion, opts)
	if err != nil {
		return peer{}, err
	}
	client, err := NewHTTPClient(TLSFiles{CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile})
	if err != nil {
		return peer{}, err
	}
	start, _ := url.Parse(c.URL) // Validate parsed it
	return peer{
		id:     id,
		start:  start,
		policy: URLPolicy{AllowInsecureHTTP: c.AllowInsecureHTTP, AllowedHosts: c.AllowedHosts},
		x:      &exchanger{client: client, timeout: c.Timeout.D(), userAgent: "hl7edge/" + id.pmVersion, password: id.password},
	}, nil
}

func fillOptions(opts *Options, kind health.Kind, name string) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Health == nil {
		opts.Health = health.NewRegistry("", "", nil).Component(kind, name, "webservice")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
}

// Destination posts spooled messages to a web service (docs/protocol.md,
// "Destination"). It implements flow.Output. The protocol is one message per
// request; Deliver may be called from several goroutines (a worker with
// lanes), which then share one session: one ping, and a post each over
// kept-alive connections. The caller keeps whatever order it needs.
type Destination struct {
	peer
	name   string
	cfg    DestinationConfig
	log    *slog.Logger
	health *health.Component
	now    func() time.Time
	alarm  func(kind, detail string)
	// upOnSuccess: a success sets the state up. With lanes the worker does
	// that, and only when no other lane is still failing.
	upOnSuccess bool

	repingNext atomic.Bool // set by Reping from any goroutine

	pingMu sync.Mutex // one ping at a time: concurrent posts share its session
	// serial is held around a whole ping and post while the server asks
	// for a ping before every post: each post then has its own session.
	serial sync.Mutex

	mu          sync.Mutex // guards the session below
	postURL     *url.URL   // nil: no session, ping first
	sessionAt   time.Time
	repingEvery bool // the server asked for a ping before every post
}

var _ flow.Output = (*Destination)(nil)

// NewDestination validates cfg (after applying its defaults), reads the
// password and certificates, and returns a destination that has not yet
// talked to the network.
func NewDestination(name string, cfg DestinationConfig, opts Options) (*Destination, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	fillOptions(&opts, health.Destination, name)
	p, err := newPeer(cfg.Peer, opts)
	if err != nil {
		return nil, err
	}
	if tr, ok := p.x.client.Transport.(*http.Transport); ok && opts.Lanes > tr.MaxIdleConnsPerHost {
		// Keep a connection per lane alive between posts; fewer would
		// close and re-handshake one after nearly every post.
		tr.MaxIdleConnsPerHost = opts.Lanes
		tr.MaxIdleConns = opts.Lanes + 2
	}
	return &Destination{
		peer:   p,
		name:   name,
		cfg:    cfg,
		log:    opts.Log.With("destination", name),
		health: opts.Health,
		now:    opts.Now,
		alarm:  opts.Alarm,

		upOnSuccess: opts.Lanes <= 1,
	}, nil
}

// Name of the destination.
func (d *Destination) Name() string { return d.name }

// Reping makes the next delivery start with a ping (the MQTT "reping"
// command). It does not wait for a delivery in progress.
func (d *Destination) Reping() { d.repingNext.Store(true) }

// Deliver posts one message and returns nil only when the web service
// acknowledged its GUID. Any error leaves the message to be retried after a
// back-off (pipeline/vocab/backoff); the session is reset so that the retry pings
// first. Errors wrap *wire.Exception, ErrRefusedURL or ErrTransport, or are
// the context's error.
func (d *Destination) Deliver(ctx context.Context, m *flow.Message) error {
	if m.GUID == "" {
		// The server could neither deduplicate nor acknowledge it.
		return fmt.Errorf("message %d has no GUID; the spool assigns one to every message: %w", m.Seq, flow.ErrPermanent)
	}
	if d.pingEveryPost() {
		d.serial.Lock()
		defer d.serial.Unlock()
	}
	msh := postAttributes(m.Raw)
	log := d.log.With("guid", m.GUID, "control_id", msh.ControlID)

	target, err := d.session(ctx)
	if err != nil {
		return d.fail(ctx, log, "ping", err)
	}
	req := &wire.HL7{
		ID:           m.GUID,
		LogonID:      d.id.logonID,
		Password:     d.id.password,
		MSH:          msh,
		PMVersion:    d.id.pmVersion,
		ComputerName: d.id.computerName,
		Message:      wire.Message{ID: m.GUID, Data: wire.EncodeMessage(m.Raw)},
	}
	var ack wire.Ack
	d.health.Add(health.CounterPosts, 1)
	err = d.x.do(ctx, "post", target, req, &ack, MaxSmallReplyBytes)
	if err == nil && ack.GUID() != m.GUID {
		err = fmt.Errorf("post to %s: %w: the ACK names GUID %q, want %q", target.Host, ErrTransport, wire.Clean(ack.GUID(), 64), m.GUID)
	}
	if err != nil {
		return d.refusal(d.fail(ctx, log, "post", err))
	}
	if d.pingEveryPost() {
		d.endSession()
	}
	d.health.Add(health.CounterAcked, 1)
	if d.upOnSuccess {
		d.health.SetState(health.Up)
	}
	log.Debug("delivered", "attempts", m.Attempts)
	return nil
}

// postAttributes reads the MSH attributes of a post with the pipeline's HL7
// parser, so that control IDs read the same here as in intake's logs. A
// message that parser refuses was still accepted into the spool (a rubbish
// bin or an operator's retry can put one there), so it falls back to the
// wire package's minimal MSH reader rather than failing the delivery.
func postAttributes(raw []byte) wire.MSH {
	m, err := hl7.Parse(raw)
	if err != nil {
		return wire.ReadMSH(raw)
	}
	h := m.Header()
	return wire.MSH{
		SendingApp: h.SendingApp, SendingFacility: h.SendingFacility,
		ReceivingApp: h.ReceivingApp, ReceivingFacility: h.ReceivingFacility,
		MessageType: h.MessageType, TriggerEvent: h.TriggerEvent,
		ControlID: h.ControlID, ProcessingID: h.ProcessingID, Version: h.Version,
	}
}

// session returns the post URL, pinging first when there is no session,
// the server asked for a ping before every post, an operator asked for a
// reping, or the session lifetime has run out.
func (d *Destination) session(ctx context.Context) (*url.URL, error) {
	d.pingMu.Lock()
	defer d.pingMu.Unlock()
	forced := d.repingNext.Swap(false)
	d.mu.Lock()
	u, at := d.postURL, d.sessionAt
	d.mu.Unlock()
	if u != nil && !forced && d.now().Sub(at) < d.cfg.SessionLifetime.D() {
		return u, nil
	}
	d.endSession()
	req := &wire.Ping{
		LogonID:      d.id.logonID,
		Password:     d.id.password,
		PMVersion:    d.id.pmVersion,
		ComputerName: d.id.computerName,
	}
	var reply wire.PingReply
	d.health.Add(health.CounterPings, 1)
	if err := d.x.do(ctx, "ping", d.start, req, &reply, MaxSmallReplyBytes); err != nil {
		return nil, err
	}
	u, err := d.policy.Check("HL7POSTURL", reply.HL7PostURL)
	if err != nil {
		return nil, fmt.Errorf("ping reply from %s: %w", d.start.Host, err)
	}
	d.mu.Lock()
	d.postURL, d.sessionAt, d.repingEvery = u, d.now(), reply.RepingRequested()
	d.mu.Unlock()
	if d.upOnSuccess {
		d.health.SetState(health.Up)
	}
	d.log.Info("session started", "post_host", u.Host, "reping", reply.RepingRequested(), "forced", forced)
	return u, nil
}

// endSession makes the next post ping first.
func (d *Destination) endSession() {
	d.mu.Lock()
	d.postURL = nil
	d.mu.Unlock()
}

// pingEveryPost says whether the server asked for a ping before every post.
func (d *Destination) pingEveryPost() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.repingEvery
}

// fail counts, logs and reports one failed step and returns err.
func (d *Destination) fail(ctx context.Context, log *slog.Logger, step string, err error) error {
	d.endSession()
	if ctx.Err() != nil {
		// Shutting down, or the worker gave up: not the peer's fault.
		return err
	}
	recordFailure(d.health, log, step, err)
	raiseRefused(d.alarm, d.name, err)
	return err
}

// refusal marks an EXCEPTION to a post whose ERRORCODE is one of
// reject_errorcodes as a refusal of the message itself (flow.ErrPermanent),
// for the destination's on_reject; it returns any other error as it is.
func (d *Destination) refusal(err error) error {
	exc, _ := isException(err)
	if exc == nil || !slices.Contains(d.cfg.RejectErrorCodes, strings.TrimSpace(exc.ErrorCode)) {
		return err
	}
	return fmt.Errorf("%w: the web service refuses this message (ERRORCODE %s is in reject_errorcodes): %w", err, wire.Clean(exc.ErrorCode, 32), flow.ErrPermanent)
}

// raiseRefused raises the url_refused alarm for an error that wraps ErrRefusedURL.
func raiseRefused(alarm func(kind, detail string), name string, err error) {
	if alarm != nil && errors.Is(err, ErrRefusedURL) {
		alarm(health.AlarmURLRefused, fmt.Sprintf("%s: %v", name, err))
	}
}

// recordFailure classifies an error for health and logs: EXCEPTION (with
// its four attributes), refused URL, or transport failure.
func recordFailure(h *health.Component, log *slog.Logger, step string, err error) {
	switch exc, ok := isException(err); {
	case exc != nil:
		h.Add(health.CounterExceptions, 1)
		log.Warn("web service answered with an EXCEPTION", "step", step,
			"method", wire.Clean(exc.Method, 64), "errorcode", wire.Clean(exc.ErrorCode, 32),
			"errormessage", wire.Clean(exc.ErrorMessage, 200), "additional", wire.Clean(exc.Additional, 64))
	case ok:
		h.Add(health.CounterRefusedURLs, 1)
		log.Error("refused a URL handed out by the ping reply; nothing was sent to it", "step", step, "err", err)
	default:
		h.Add(health.CounterTransportErrors, 1)
		if errors.As(err, new(tlsFailure)) {
			h.Add(health.CounterTLSErrors, 1)
		}
		log.Warn("transport failure", "step", step, "err", err)
	}
	h.Fail(health.Down, err.Error())
}

// Close drops idle connections. The destination must not be used after.
func (d *Destination) Close() error {
	d.x.client.CloseIdleConnections()
	return nil
}
