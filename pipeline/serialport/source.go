package serialport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/lis01"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// Options are a port's collaborators.
type Options struct {
	Log *slog.Logger // required
	// Health receives state (Up, Missing, Down, Stopped) and counters.
	Health *health.Component // required
	// Loop (sources only), when set, is beaten at every read poll (at least every 100 ms
	// while the port is open) and every reopen attempt, so a port stuck in
	// the driver shows up as a stalled loop.
	Loop *health.Loop
	// LIS01 tunes the low-level protocol; zero fields are the standard's
	// timeouts. MaxMessageBytes and Count are set from the config.
	LIS01 lis01.Options
}

func (o *Options) beat() func() {
	if o.Loop == nil {
		return func() {}
	}
	return o.Loop.Beat
}

func (o *Options) check(kind, name string) error {
	if o.Log == nil || o.Health == nil {
		return fmt.Errorf("serial %s %q: Options.Log and Options.Health are required", kind, name)
	}
	return nil
}

// Source reads HL7 messages from a serial device and offers them to
// intake, answering the device only once intake has answered: an HL7 ACK
// frame for MLLP, ACK (Accepted) or NAK (anything else) of the last frame
// for LIS01-A2. A device that goes away is waited for and reopened.
type Source struct {
	name   string
	cfg    Config
	intake flow.Intake
	log    *slog.Logger
	comp   *health.Component
	proto  lis01.Options
	beat   func()
}

// NewSource checks cfg (after applying defaults to a copy). It does not
// open the device: Run does, and waits for it if it is not there.
func NewSource(name string, cfg Config, intake flow.Intake, opts Options) (*Source, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := opts.check("source", name); err != nil {
		return nil, err
	}
	if intake == nil {
		return nil, errors.New("intake is required")
	}
	return &Source{name: name, cfg: cfg, intake: intake, comp: opts.Health, proto: opts.LIS01, beat: opts.beat(),
		log: opts.Log.With("source", name, "device", cfg.Device)}, nil
}

// Run serves the device until ctx ends, then closes it and returns nil.
// Device failures are not returned: the port is closed, the component goes
// Missing (path gone) or Down, and the port is reopened when it can be.
func (s *Source) Run(ctx context.Context) error {
	defer s.comp.SetState(health.Stopped)
	for opened := false; ; opened = true {
		l, err := waitOpen(ctx, &s.cfg, s.comp, s.log, s.beat)
		if err != nil {
			return nil // ctx ended
		}
		if opened {
			s.comp.Add(health.CounterReopens, 1)
		}
		s.comp.SetState(health.Up)
		s.log.Info("serial source open", "baud", s.cfg.Baud, "framing", s.cfg.Framing)
		err = s.serve(ctx, l)
		l.Close()
		if ctx.Err() != nil {
			return nil
		}
		markLost(s.comp, s.cfg.Device, err)
		s.log.Warn("serial source lost its device; reopening", "err", err)
	}
}

// waitOpen opens the port, polling every reopen_interval while the path is
// missing (Missing) or opening fails (Down). It fails only when ctx ends.
func waitOpen(ctx context.Context, cfg *Config, comp *health.Component, log *slog.Logger, beat func()) (*line, error) {
	t := time.NewTicker(cfg.ReopenInterval.D())
	defer t.Stop()
	var last string
	for {
		beat()
		l, err := openLine(ctx, cfg, beat)
		if err == nil {
			return l, nil
		}
		markFailed(comp, err)
		if msg := err.Error(); msg != last { // log changes, not every poll
			log.Warn("serial device not available; waiting", "err", err, "retry_every", cfg.ReopenInterval.D())
			last = msg
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// markLost records the failure of an open port: Missing when its path has
// gone too (the usual unplugged adapter), else Down.
func markLost(comp *health.Component, path string, err error) {
	if _, e := identify(path); errors.Is(e, errMissing) {
		comp.Fail(health.Missing, err.Error())
		return
	}
	comp.Fail(health.Down, err.Error())
}

// markFailed records a failure to open: Missing when the path is absent.
func markFailed(comp *health.Component, err error) {
	if errors.Is(err, errMissing) {
		comp.Fail(health.Missing, err.Error())
	} else {
		comp.Fail(health.Down, err.Error())
	}
}

func (s *Source) serve(ctx context.Context, l *line) error {
	if s.cfg.Framing == FramingLIS01 {
		return s.serveLIS01(ctx, l)
	}
	return s.serveMLLP(ctx, l)
}

// accept offers one message to intake and logs the verdict by control ID.
func (s *Source) accept(ctx context.Context, raw []byte) flow.Outcome {
	// The port is the sender's address: the trace says which line it came in on.
	out := s.intake.Accept(ctx, flow.Inbound{Source: s.name, Raw: raw, Peer: "serial:" + s.cfg.Device})
	if out.Code == flow.Accepted {
		s.comp.Add(health.CounterMessages, 1)
		s.log.Debug("message accepted", "control_id", out.ControlID, "guid", out.GUID)
		return out
	}
	s.comp.Add(health.CounterRefused, 1)
	s.log.Warn("message refused", "code", string(out.Code), "control_id", out.ControlID, "reason", out.Reason)
	return out
}

func (s *Source) serveMLLP(ctx context.Context, l *line) error {
	r := mllp.NewReader(l, int(s.cfg.MaxMessageBytes))
	var skipped int64
	for {
		f, err := r.ReadFrame()
		if n := r.Skipped(); n > skipped {
			s.comp.Add(health.CounterNoiseBytes, uint64(n-skipped))
			skipped = n
		}
		if err != nil {
			return err
		}
		var ack []byte
		if f.Oversize {
			// Intake must not store a truncated message; the beginning is
			// enough to answer AR naming the sender's control ID.
			s.comp.Add(health.CounterOversize, 1)
			s.comp.Add(health.CounterRefused, 1)
			reason := fmt.Sprintf("message of %d bytes is longer than max_message_bytes (%d): raise the limit for this port or send smaller messages", f.Size, int64(s.cfg.MaxMessageBytes))
			s.log.Warn("message refused", "code", string(flow.Rejected), "reason", reason)
			ack = hl7.ACKUnparsed(f.Data, flow.Rejected, hl7.CodeInternalError, reason, "", time.Now())
		} else {
			out := s.accept(ctx, f.Data)
			ack = out.ACK
			if ack == nil {
				// Intake always should build one; answer anyway so the
				// device is never left waiting for its timeout.
				ack = hl7.ACKUnparsed(f.Data, out.Code, hl7.CodeInternalError, out.Reason, "", time.Now())
			}
		}
		if err := mllp.WriteFrame(l, ack); err != nil {
			if errors.Is(err, mllp.ErrFramingByte) {
				s.log.Error("intake built an ACK that cannot be MLLP framed; none sent", "err", err)
				continue
			}
			return err
		}
	}
}

// serveLIS01 receives LIS01-A2 transmissions. The last frame of a message
// is ACKed only when intake accepted every HL7 message in it. A Rejected
// message is NAKed at this level too (LIS01 has no way to carry the HL7 AR
// without an upper-level reply), so the device retries it and gives up after
// six NAKs, reporting a failed transmission; each refusal is counted and
// logged by control ID.
func (s *Source) serveLIS01(ctx context.Context, l *line) error {
	opt := s.proto
	opt.MaxMessageBytes = int(s.cfg.MaxMessageBytes)
	opt.Count = s.comp.Add
	opt.Log = s.log
	rx := lis01.NewReceiver(l, opt)
	for {
		text, commit, err := rx.Receive(ctx)
		if errors.Is(err, lis01.ErrTooLarge) {
			s.comp.Add(health.CounterRefused, 1)
			s.log.Warn("message refused", "err", err)
			continue
		}
		if err != nil {
			return err
		}
		ok := true
		for _, m := range lis01.SplitMessages(text) {
			// Stop at the first refusal: the device sends the whole text
			// again, so accepting the rest now would only add duplicates.
			if out := s.accept(ctx, m); out.Code != flow.Accepted {
				ok = false
				break
			}
		}
		if err := commit(ok); err != nil {
			return err
		}
	}
}
