// Package intake is where every source's message becomes the gateway's
// responsibility: it is parsed, routed, committed to the spool, and only then
// answered. Whatever the outcome, the sender gets an HL7 acknowledgement that
// says what happened: AA once the message is safe, AR with the reason when
// the message itself is unacceptable, AE when the gateway cannot take it now
// (so the sender retries).
package intake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/route"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/storage"
)

// Spool is the part of the spool intake needs.
type Spool interface {
	Append(ctx context.Context, e storage.Entry) (storage.Result, error)
}

// Tracer is what a spool may offer to keep the trace of a message it never
// stores: one a rubbish bin ate (answered AA), or one refused with AE or AR
// (storage.Spool.Eaten, Refused).
type Tracer interface {
	Eaten(e storage.Entry, bin string)
	Refused(e storage.Entry, ack string)
}

// Options are intake's collaborators.
type Options struct {
	Log      *slog.Logger
	Health   *health.Registry
	Now      func() time.Time
	Activity func() // flashes the ACT LED; may be nil
	// Alarm raises an operator alarm (spool full, storage failing); may be nil.
	Alarm func(kind, detail string)
}

// Intake implements flow.Intake.
type Intake struct {
	spool  Spool
	router *route.Router
	o      Options
	full   atomic.Bool // a spool_full alarm is raised and spool_ok not yet
}

var _ flow.Intake = (*Intake)(nil)

// New makes an intake that routes with router and stores into spool.
func New(spool Spool, router *route.Router, o Options) *Intake {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Health == nil {
		o.Health = health.NewRegistry("", "", o.Now)
	}
	return &Intake{spool: spool, router: router, o: o}
}

// Accept implements flow.Intake.
func (in *Intake) Accept(ctx context.Context, msg flow.Inbound) flow.Outcome {
	comp := in.o.Health.Component(health.Source, msg.Source, "")
	comp.Add(health.CounterReceived, 1)
	if in.o.Activity != nil {
		in.o.Activity()
	}
	raw := hl7.Normalize(msg.Raw)
	ackID := newControlID()
	now := in.o.Now()

	m, err := hl7.Parse(raw)
	if err != nil {
		// The reason that goes to the log, health and Outcome.Reason names
		// the field; only the sender's ACK may quote what was in it.
		reason := err.Error()
		comp.Add(health.CounterRejected, 1)
		in.o.Log.Warn("message rejected (AR)", "source", msg.Source, "control_id", recoverControlID(raw), "reason", reason)
		in.refused(in.entry(msg, raw, hl7.Header{ControlID: recoverControlID(raw)}, nil), "AR")
		return flow.Outcome{
			Code: flow.Rejected, Reason: reason, ControlID: recoverControlID(raw),
			ACK: hl7.ACKUnparsed(raw, flow.Rejected, hl7.ErrorCode(err), hl7.SenderText(err), ackID, now),
		}
	}
	h := m.Header()
	out := flow.Outcome{ControlID: h.ControlID}

	d := in.router.Route(m)
	if d.Rubbish != "" {
		comp.Add(health.CounterRubbish, 1)
		in.o.Health.Component(health.Destination, d.Rubbish, "rubbish").Add(health.CounterEaten, 1)
		in.o.Log.Debug("message eaten by rubbish bin", "source", msg.Source, "control_id", h.ControlID, "bin", d.Rubbish)
		if t, ok := in.spool.(Tracer); ok {
			t.Eaten(in.entry(msg, raw, h, nil), d.Rubbish)
		}
		out.Code = flow.Accepted
		out.ACK = hl7.ACK(m, flow.Accepted, 0, "", ackID, now)
		return out
	}

	res, err := in.spool.Append(ctx, in.entry(msg, raw, h, d.Destinations))
	if errors.Is(err, storage.ErrTooLarge) {
		// It will never fit: retrying it unchanged does not help.
		comp.Add(health.CounterErrors, 1)
		in.o.Log.Warn("message refused (AR): larger than the spool stores", "source", msg.Source, "control_id", h.ControlID, "bytes", len(raw))
		in.refused(in.entry(msg, raw, h, nil), "AR")
		out.Code, out.Reason = flow.Rejected, err.Error()
		out.ACK = hl7.ACK(m, flow.Rejected, hl7.CodeInternalError, err.Error(), ackID, now)
		return out
	}
	if err != nil {
		comp.Add(health.CounterErrors, 1)
		reason := fmt.Sprintf("gateway cannot store the message now: %v", err)
		if errors.Is(err, storage.ErrFull) {
			comp.Add(health.CounterRefusedFull, 1)
			// One alarm when the spool becomes full, not one per refusal.
			if in.full.CompareAndSwap(false, true) && in.o.Alarm != nil {
				in.o.Alarm(health.AlarmSpoolFull, err.Error())
			}
		} else if in.o.Alarm != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, storage.ErrClosed) {
			in.o.Alarm(health.AlarmStorageError, err.Error())
		}
		in.o.Log.Warn("message refused (AE)", "source", msg.Source, "control_id", h.ControlID, "reason", reason)
		in.refused(in.entry(msg, raw, h, nil), "AE")
		out.Code, out.Reason = flow.RetryLater, reason
		out.ACK = hl7.ACK(m, flow.RetryLater, hl7.CodeInternalError, reason, ackID, now)
		return out
	}
	// The full state ends when the spool has real room again, not at the
	// first message that fits: senders retrying at the limit would otherwise
	// raise a spool_full/spool_ok pair for every few messages.
	if res.Headroom && in.full.CompareAndSwap(true, false) && in.o.Alarm != nil {
		in.o.Alarm(health.AlarmSpoolOK, "spool is below 90% of max_bytes again and accepts messages")
	}
	out.Code, out.GUID, out.Duplicate = flow.Accepted, res.GUID, res.Duplicate
	switch {
	case res.Duplicate:
		// The pull source counts its own duplicates; counting here too would double them.
		in.o.Log.Info("message already stored; acknowledged again", "source", msg.Source, "control_id", h.ControlID, "guid", res.GUID)
	case res.Undeliverable:
		comp.Add(health.CounterUndeliverable, 1)
		in.o.Log.Warn("message matched no destination; kept in the undeliverable store", "source", msg.Source, "control_id", h.ControlID, "guid", res.GUID)
	default:
		comp.Add(health.CounterAccepted, 1)
		in.o.Log.Debug("message spooled", "source", msg.Source, "control_id", h.ControlID, "guid", res.GUID, "destinations", strings.Join(d.Destinations, ","))
	}
	out.ACK = hl7.ACK(m, flow.Accepted, 0, "", ackID, now)
	return out
}

// entry is what the spool stores of a message, with what its trace keeps:
// MSH-10, MSH-9 and the sender's address, no other field.
func (in *Intake) entry(msg flow.Inbound, raw []byte, h hl7.Header, dests []string) storage.Entry {
	typ := h.MessageType
	if h.TriggerEvent != "" {
		typ += "^" + h.TriggerEvent
	}
	if typ != "" && !messageType.MatchString(typ) {
		// MSH-9 is kept because it is a code; a sender that put anything
		// else there must not get it into the trace.
		typ = "(not a message type)"
	}
	return storage.Entry{Source: msg.Source, Raw: raw, Dests: dests, RemoteID: msg.RemoteID, ControlID: h.ControlID, Type: typ, Peer: msg.Peer}
}

// refused keeps the trace of a message answered ack and not stored.
func (in *Intake) refused(e storage.Entry, ack string) {
	if t, ok := in.spool.(Tracer); ok {
		t.Refused(e, ack)
	}
}

// messageType is what MSH-9.1^MSH-9.2 look like (ADT^A01, ORU^R01, ACK).
var messageType = regexp.MustCompile(`^[A-Z0-9]{1,3}(\^[A-Z0-9]{1,3})?$`)

// newControlID makes a unique MSH-10 for an ACK (20 characters fit every
// HL7 v2 version's limit).
func newControlID() string {
	u := uuid.New()
	return strings.ToUpper(strings.ReplaceAll(u.String(), "-", "")[:20])
}

// recoverControlID reads MSH-10 from a message that did not parse, for logs.
func recoverControlID(raw []byte) string {
	line := string(raw)
	if i := strings.IndexByte(line, '\r'); i >= 0 {
		line = line[:i]
	}
	if len(line) < 4 || !strings.HasPrefix(line, "MSH") {
		return ""
	}
	f := strings.Split(line, line[3:4])
	if len(f) > 9 && len(f[9]) <= 40 {
		if c := strings.IndexAny(f[9], "^~\\&"); c >= 0 {
			return f[9][:c]
		}
		return f[9]
	}
	return ""
}
