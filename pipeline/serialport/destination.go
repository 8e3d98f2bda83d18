package serialport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/lis01"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// Destination writes messages to a serial device (flow.Output). It opens
// the port on the first Deliver, keeps it open, and after a device failure
// closes it and opens it again on the next Deliver; the delivery worker's
// back-off paces the attempts.
type Destination struct {
	name  string
	cfg   Config
	log   *slog.Logger
	comp  *health.Component
	proto lis01.Options

	mu     sync.Mutex
	l      *line
	mr     *mllp.Reader
	tx     *lis01.Sender
	opened bool // opened at least once: later opens are reopens
	closed bool
}

// NewDestination checks cfg (after applying defaults to a copy).
func NewDestination(name string, cfg Config, opts Options) (*Destination, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := opts.check("destination", name); err != nil {
		return nil, err
	}
	return &Destination{name: name, cfg: cfg, comp: opts.Health, proto: opts.LIS01,
		log: opts.Log.With("destination", name, "device", cfg.Device)}, nil
}

// Deliver writes m and returns nil once the device took it: an HL7 ACK with
// MSA-1 AA or CA for this message's control ID (MLLP), or every frame ACKed
// (LIS01-A2). AR/CR wrap flow.ErrPermanent.
func (d *Destination) Deliver(ctx context.Context, m *flow.Message) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("serial destination %q is closed", d.name)
	}
	if d.l == nil {
		if err := d.open(ctx); err != nil {
			markFailed(d.comp, err)
			return fmt.Errorf("serial destination %q: %w", d.name, err)
		}
	}
	d.l.ctx = ctx
	var err error
	if d.cfg.Framing == FramingLIS01 {
		if err := lis01.CheckText(m.Raw); err != nil {
			return fmt.Errorf("serial destination %q: message %s: %w: %w", d.name, m.GUID, flow.ErrPermanent, err)
		}
		err = d.tx.Send(ctx, m.Raw)
	} else {
		err = d.deliverMLLP(ctx, m)
	}
	if err == nil {
		d.comp.Add(health.CounterMessages, 1)
		d.comp.SetState(health.Up)
		d.log.Debug("message delivered", "guid", m.GUID)
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("serial destination %q: delivery of %s interrupted: %w", d.name, m.GUID, ctx.Err())
	}
	var de *deviceError
	if errors.As(err, &de) {
		d.closeLine()
		markLost(d.comp, d.cfg.Device, err)
	} else if !errors.Is(err, flow.ErrPermanent) {
		d.comp.Fail(health.Down, err.Error())
	}
	return fmt.Errorf("serial destination %q: message %s: %w", d.name, m.GUID, err)
}

func (d *Destination) open(ctx context.Context) error {
	l, err := openLine(ctx, &d.cfg, func() {})
	if err != nil {
		return err
	}
	if d.opened {
		d.comp.Add(health.CounterReopens, 1)
	}
	d.opened = true
	d.l = l
	d.mr = mllp.NewReader(l, int(d.cfg.MaxMessageBytes))
	opt := d.proto
	opt.Count = d.comp.Add
	opt.Log = d.log
	d.tx = lis01.NewSender(l, opt)
	d.comp.SetState(health.Up)
	d.log.Info("serial destination open", "baud", d.cfg.Baud, "framing", d.cfg.Framing)
	return nil
}

func (d *Destination) closeLine() {
	if d.l != nil {
		d.l.Close()
		d.l, d.mr, d.tx = nil, nil, nil
	}
}

func (d *Destination) deliverMLLP(ctx context.Context, m *flow.Message) error {
	want := controlID(m.Raw)
	if err := mllp.WriteFrame(d.l, m.Raw); err != nil {
		if errors.Is(err, mllp.ErrFramingByte) {
			return fmt.Errorf("%w: %w", flow.ErrPermanent, err)
		}
		return err
	}
	d.l.SetReadDeadline(time.Now().Add(d.cfg.ACKTimeout.D()))
	defer d.l.SetReadDeadline(time.Time{})
	for {
		f, err := d.mr.ReadFrame()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// A late ACK would answer this message while we wait for the
			// next: drop what has arrived and start the reader afresh.
			d.l.discardInput()
			d.mr = mllp.NewReader(d.l, int(d.cfg.MaxMessageBytes))
			return fmt.Errorf("no HL7 ACK within ack_timeout (%v); the message will be sent again (check the device is on line, or raise ack_timeout)", d.cfg.ACKTimeout)
		}
		if err != nil {
			return err
		}
		code, acked, _, err := hl7.ParseACK(f.Data)
		if err != nil {
			// Not an acknowledgement (the device may talk unprompted):
			// keep waiting for ours.
			d.comp.Add(health.CounterNoiseBytes, uint64(len(f.Data)))
			d.log.Debug("frame from device is not an ACK; skipped", "err", err)
			continue
		}
		if want != "" && acked != "" && acked != want {
			d.comp.Add(health.CounterStaleACKs, 1)
			d.log.Debug("ACK for another message skipped", "acked", acked, "control_id", want)
			continue
		}
		switch code {
		case "AA", "CA":
			return nil
		case "AR", "CR":
			d.comp.Add(health.CounterRefused, 1)
			return fmt.Errorf("%w: device answered %s (rejected) to control ID %s; sending it again unchanged will not help", flow.ErrPermanent, code, want)
		default:
			d.comp.Add(health.CounterRefused, 1)
			return fmt.Errorf("device answered %s (error) to control ID %s; it will be sent again", code, want)
		}
	}
}

// controlID is MSH-10 of raw, or "" when unreadable (then any ACK counts).
func controlID(raw []byte) string {
	m, err := hl7.Parse(raw)
	if err != nil {
		return ""
	}
	return m.Header().ControlID
}

// Close closes the port; later Deliver calls fail.
func (d *Destination) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	d.closeLine()
	d.comp.SetState(health.Stopped)
	return nil
}
