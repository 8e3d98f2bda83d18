package deliver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// What a destination does with a message its receiver refuses for good
// (MLLP AR/CR, a web service's EXCEPTION for the message itself): the
// destination's on_reject key.
const (
	// OnRejectHold keeps the refused message first in line, retried with
	// back-off, and holds the ones behind it: nothing overtakes it, so a
	// corrected result never arrives before the one it corrects. The
	// destination shows state "held" with the command that moves the
	// message aside (hl7edge spool skip). The default.
	OnRejectHold = "hold"
	// OnRejectDead moves the refused message to the dead letters at once
	// (alarm dead_letter) and goes on with the next.
	OnRejectDead = "dead"
)

// ErrNothingToSkip is Skip's answer when no message is failing: a message
// that has not failed is not moved aside.
var ErrNothingToSkip = errors.New("no message is failing: skip moves aside only a message that has failed at least once")

// skipReq is an operator's request to move the failing message aside.
type skipReq struct {
	reason string
	done   chan skipResult
}

type skipResult struct {
	guid string
	err  error
}

// Skip moves the first failing message (with lanes: of the first lane to
// take the request) to the dead letters with reason, and returns its GUID.
// It takes effect when the message's current attempt ends; it waits for
// that until ctx ends.
func (w *Worker) Skip(ctx context.Context, reason string) (string, error) {
	if w.downNow() == 0 {
		return "", ErrNothingToSkip
	}
	if p, _ := w.pausedCh(); p {
		return "", errors.New("the destination is paused: resume it first; skip acts on the message it is retrying")
	}
	r := skipReq{reason: reason, done: make(chan skipResult, 1)}
	select {
	case w.skips <- r:
	case <-ctx.Done():
		return "", fmt.Errorf("the failing message's attempt did not end in time: %w; try again", ctx.Err())
	}
	select {
	case res := <-r.done:
		return res.guid, res.err
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for the message to be moved: %w", ctx.Err())
	}
}

// backoff waits out lane l's back-off after m failed, or less when kicked,
// and takes an operator's skip request meanwhile: then m goes to the dead
// letters (true).
func (w *Worker) backoff(ctx context.Context, m *flow.Message, l *lane) (bool, error) {
	deadline := time.NewTimer(l.b.Next())
	defer deadline.Stop()
	beat := time.NewTicker(beatEvery / 2)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case <-l.kick:
			return false, nil
		case <-deadline.C:
			return false, nil
		case <-beat.C:
			w.beat()
		case r := <-w.skips:
			w.o.Log.Warn("operator moves a message to dead letters", "destination", w.name, "guid", m.GUID, "attempts", l.attempt)
			err := w.kill(m, l, "skipped by an operator: "+r.reason)
			r.done <- skipResult{guid: m.GUID, err: err}
			return err == nil, err
		}
	}
}

// refused decides what a permanent refusal of m does: with on_reject: dead
// m goes to the dead letters (true); otherwise the destination is held and
// says by what and how to go on.
func (w *Worker) refused(m *flow.Message, l *lane, err error) (bool, error) {
	if w.o.OnReject == OnRejectDead {
		return true, w.kill(m, l, fmt.Sprintf("refused by the receiver (on_reject: dead): %v", err))
	}
	w.o.Health.Fail(health.Held, fmt.Sprintf("the receiver refused message %s for good and the rest wait behind it (%v); fix it at the receiver, "+
		"or move it to the dead letters with `hl7edge spool skip --destination %s --reason TEXT`, or set on_reject: dead", m.GUID, err, w.name))
	return false, nil
}

// kill moves m to the dead letters with reason, raises dead_letter and, when
// no other lane is failing, marks the destination up again: with nothing
// behind the message no delivery would.
func (w *Worker) kill(m *flow.Message, l *lane, reason string) error {
	attempts := max(l.attempt, 1)
	if err := w.q.Kill(w.name, m.Seq, reason, attempts); err != nil {
		return fmt.Errorf("destination %s: move %s to dead letters: %w", w.name, m.GUID, err)
	}
	w.o.Health.Add(health.CounterDead, 1)
	w.o.Log.Error("message moved to dead letters", "destination", w.name, "guid", m.GUID, "attempts", attempts)
	if w.o.Alarm != nil {
		w.o.Alarm(health.AlarmDeadLetter, fmt.Sprintf("destination %s: message %s moved to dead letters after %s", w.name, m.GUID, units.Count(attempts, "attempt", "attempts")))
	}
	w.laneRecovered(l)
	l.b.Reset()
	if w.downNow() == 0 {
		if p, _ := w.pausedCh(); !p {
			w.o.Health.SetState(health.Up)
		}
	}
	return nil
}
