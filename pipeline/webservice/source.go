package webservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/backoff"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

// Source pulls messages from a web service's mailbox (docs/protocol.md, "Data
// source") and hands each to intake; only what intake has durably stored is
// acknowledged.
type Source struct {
	peer
	name      string
	cfg       SourceConfig
	intake    flow.Intake
	log       *slog.Logger
	health    *health.Component
	loop      *health.Loop
	now       func() time.Time
	alarm     func(kind, detail string)
	frequency time.Duration
	backoff   *backoff.Backoff

	// The session; only Run's goroutine touches it.
	urls      *sourceURLs
	sessionAt time.Time
}

type sourceURLs struct {
	mailbox, get, ack *url.URL
}

// NewSource validates cfg (after applying its defaults), reads the password
// and certificates, and returns a source that has not yet talked to the
// network.
func NewSource(name string, cfg SourceConfig, intake flow.Intake, opts Options) (*Source, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if intake == nil {
		return nil, errors.New("no intake to hand messages to")
	}
	fillOptions(&opts, health.Source, name)
	p, err := newPeer(cfg.Peer, opts)
	if err != nil {
		return nil, err
	}
	return &Source{
		peer:      p,
		name:      name,
		cfg:       cfg,
		intake:    intake,
		log:       opts.Log.With("source", name),
		health:    opts.Health,
		loop:      opts.Loop,
		alarm:     opts.Alarm,
		now:       opts.Now,
		frequency: cfg.Frequency.D(),
		backoff:   backoff.New(cfg.MaxBackoff.D()),
	}, nil
}

// Name of the source.
func (s *Source) Name() string { return s.name }

// Run polls until ctx ends, then returns nil after closing idle connections.
// A failed round (EXCEPTION, refused URL, transport failure) waits the
// back-off and starts again with a ping; a completed round waits the
// polling interval.
func (s *Source) Run(ctx context.Context) error {
	defer s.x.client.CloseIdleConnections()
	for {
		s.beat()
		err := s.round(ctx)
		wait := s.frequency
		if err != nil {
			s.urls = nil
			if ctx.Err() != nil {
				return nil
			}
			recordFailure(s.health, s.log, "poll", err)
			raiseRefused(s.alarm, s.name, err)
			wait = s.backoff.Next()
			s.log.Debug("backing off", "wait", wait, "failures", s.backoff.Failures())
		}
		if s.pause(ctx, wait) != nil {
			return nil
		}
	}
}

// pause waits d while keeping the liveness beacon beating.
func (s *Source) pause(ctx context.Context, d time.Duration) error {
	const beatEvery = 5 * time.Second
	for d > 0 {
		step := min(d, beatEvery)
		if err := backoff.Sleep(ctx, step); err != nil {
			return err
		}
		s.beat()
		d -= step
	}
	return ctx.Err()
}

func (s *Source) beat() {
	if s.loop != nil {
		s.loop.Beat()
	}
}

// round is one poll: ping when needed, read the mailbox, then get, store and
// acknowledge each message in mailbox order.
func (s *Source) round(ctx context.Context) error {
	if err := s.session(ctx); err != nil {
		return err
	}
	var box wire.MailboxReply
	err := s.x.do(ctx, "mailbox", s.urls.mailbox, &wire.Mailbox{
		LogonID: s.id.logonID, Password: s.id.password, PMVersion: s.id.pmVersion, ComputerName: s.id.computerName,
	}, &box, MaxMailboxReplyBytes)
	if err != nil {
		return err
	}
	s.health.Add(health.CounterPolls, 1)
	s.health.SetState(health.Up)
	for _, item := range box.Items {
		if item.ID == "" {
			return fmt.Errorf("mailbox at %s: %w: an entry has no ID", s.urls.mailbox.Host, ErrTransport)
		}
		stop, err := s.take(ctx, item.ID)
		if err != nil {
			return err
		}
		// Progress resets the back-off; a mailbox that answers while every
		// get fails does not, so a broken server is not hammered.
		s.backoff.Reset()
		if stop {
			break
		}
		s.beat()
	}
	if s.cfg.Reping {
		s.urls = nil
	}
	s.backoff.Reset()
	return nil
}

// peerOf is where a pulled message came from, as its trace keeps it: the
// web service's scheme and host, never a path or query string (a session
// token may ride in either) or credentials.
func peerOf(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host}).String()
}

// take gets one message, hands it to intake and acknowledges it once
// stored. stop means intake cannot store now (AE): end the round and try
// again at the next interval.
func (s *Source) take(ctx context.Context, id string) (stop bool, err error) {
	log := s.log.With("remote_id", wire.Clean(id, 64))
	var msg wire.HL7
	err = s.x.do(ctx, "get", s.urls.get, &wire.Get{
		ID: id, LogonID: s.id.logonID, Password: s.id.password, PMVersion: s.id.pmVersion, ComputerName: s.id.computerName,
	}, &msg, MaxGetReplyBytes(int64(s.cfg.MaxMessageBytes)))
	if err != nil {
		return false, err
	}
	raw, err := s.checkGet(id, &msg)
	if err != nil {
		return false, err
	}
	out := s.intake.Accept(ctx, flow.Inbound{Source: s.name, Raw: raw, RemoteID: id, Peer: peerOf(s.urls.get)})
	controlID := out.ControlID
	if controlID == "" {
		controlID = wire.ReadMSH(raw).ControlID
	}
	log = log.With("control_id", controlID, "guid", out.GUID)
	switch {
	case out.Code == flow.Accepted || out.Duplicate:
	case out.Code == flow.Rejected:
		// Retrying it unchanged cannot help, acknowledging it would drop it:
		// leave it on the server, where it stays visible, and go on.
		s.health.Add(health.CounterRejected, 1)
		s.health.Fail("", "intake rejected remote message "+wire.Clean(id, 64)+": "+out.Reason)
		log.Error("intake rejected the message; it stays unacknowledged on the server", "reason", out.Reason)
		return false, nil
	default:
		s.health.Fail("", "intake could not store remote message "+wire.Clean(id, 64)+": "+out.Reason)
		log.Warn("intake could not store the message; retrying at the next poll", "code", out.Code, "reason", out.Reason)
		return true, nil
	}
	if out.Duplicate {
		s.health.Add(health.CounterDuplicates, 1)
		log.Info("offered again a message stored before (its earlier ack was lost); acknowledging it")
	} else {
		s.health.Add(health.CounterMessages, 1)
	}
	if err := s.ack(ctx, id); err != nil {
		return false, err
	}
	log.Debug("acknowledged")
	return false, nil
}

// checkGet makes sure the reply is the message asked for and decodes it.
func (s *Source) checkGet(id string, msg *wire.HL7) ([]byte, error) {
	host := s.urls.get.Host
	for _, got := range []string{msg.ID, msg.Message.ID} {
		if got != "" && got != id {
			return nil, fmt.Errorf("get from %s: %w: asked for ID %q, the reply carries %q", host, ErrTransport, wire.Clean(id, 64), wire.Clean(got, 64))
		}
	}
	raw, err := wire.DecodeMessage(msg.Message.Data)
	if err != nil {
		return nil, fmt.Errorf("get from %s: %w: ID %q: %w", host, ErrTransport, wire.Clean(id, 64), err)
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("get from %s: %w: ID %q: the reply has no MESSAGE", host, ErrTransport, wire.Clean(id, 64))
	}
	return raw, nil
}

// ack tells the server a message is stored. The answer is an empty
// EXCEPTION; an ACK naming the same ID is accepted too.
func (s *Source) ack(ctx context.Context, id string) error {
	var reply wire.Ack
	err := s.x.do(ctx, "ack", s.urls.ack, &wire.HL7Ack{
		ID: id, LogonID: s.id.logonID, Password: s.id.password, PMVersion: s.id.pmVersion, ComputerName: s.id.computerName,
	}, &reply, MaxSmallReplyBytes)
	var exc *wire.Exception
	switch {
	case errors.As(err, &exc) && exc.Empty():
		return nil
	case err != nil:
		return err
	case reply.GUID() != "" && reply.GUID() != id:
		return fmt.Errorf("ack to %s: %w: acknowledged ID %q, the reply names %q", s.urls.ack.Host, ErrTransport, wire.Clean(id, 64), wire.Clean(reply.GUID(), 64))
	}
	return nil
}

// session pings when there is no session or it has outlived its lifetime.
func (s *Source) session(ctx context.Context) error {
	if s.urls != nil && s.now().Sub(s.sessionAt) < s.cfg.SessionLifetime.D() {
		return nil
	}
	s.urls = nil
	var reply wire.PingReply
	s.health.Add(health.CounterPings, 1)
	err := s.x.do(ctx, "ping", s.start, &wire.Ping{
		LogonID: s.id.logonID, PMVersion: s.id.pmVersion,
		Frequency: FormatFrequency(s.frequency), Reping: wire.FormatBool(s.cfg.Reping),
	}, &reply, MaxSmallReplyBytes)
	if err != nil {
		return err
	}
	var urls sourceURLs
	for _, f := range []struct {
		attr, raw string
		dst       **url.URL
	}{{"MAILBOXURL", reply.MailboxURL, &urls.mailbox}, {"HL7GETURL", reply.HL7GetURL, &urls.get}, {"HL7ACKURL", reply.HL7AckURL, &urls.ack}} {
		u, err := s.policy.Check(f.attr, f.raw)
		if err != nil {
			return fmt.Errorf("ping reply from %s: %w", s.start.Host, err)
		}
		*f.dst = u
	}
	s.urls, s.sessionAt = &urls, s.now()
	s.health.SetState(health.Up)
	s.log.Info("session started", "mailbox_host", urls.mailbox.Host)
	return nil
}
