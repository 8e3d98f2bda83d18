// Package deliver runs one worker per destination: it takes that
// destination's messages from the spool oldest first and never skips ahead.
// A failing message stays first in line, retried with exponential back-off
// and full jitter, until it is delivered, or, when max_attempts is set, moved
// to the destination's dead letters for an operator to retry.
package deliver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// Queue is the part of the spool a worker needs.
type Queue interface {
	Next(dest string, after uint64, max int) ([]flow.Message, error)
	Wait(dest string) <-chan struct{}
	Delivered(dest string, seq uint64) error
	Kill(dest string, seq uint64, reason string, attempts int) error
}

// Options configure a worker.
type Options struct {
	MaxAttempts int           // 0: retry forever
	OnReject    string        // OnRejectHold ("" too) or OnRejectDead
	MaxBackoff  time.Duration // back-off ceiling; default 5m
	MinBackoff  time.Duration // first back-off ceiling; default 1s
	Log         *slog.Logger
	Health      *health.Component
	Loop        *health.Loop // liveness beacon; may be nil
	Activity    func()       // ACT LED; may be nil
	Alarm       func(kind, detail string)
	// Lanes is how many messages may be in flight at once (0 or 1: one, in
	// strict spool order). With more, messages with the same LaneKey keep
	// their spool order and different keys are delivered in parallel.
	Lanes int
	// LaneKey reads a message's key (for example the patient identifier);
	// nil or "" puts every message in one fixed lane. Only used with Lanes > 1.
	LaneKey func(raw []byte) string
}

// IntakeGauge is what a queue may offer so that delivery gives way to
// intake. IntakeIdle says how long no message has been waiting to be
// stored; while one is, it returns a channel closed once none is.
type IntakeGauge interface {
	IntakeIdle() (time.Duration, <-chan struct{})
}

// The rule by which delivery gives way to intake. A sender is blocked until
// its ACK, and the ACK waits for the spool's fsync; a delivery running
// meanwhile takes CPU and, for a file destination, disk flushes of its own,
// so it lengthens every ACK of the group. The message is already safe in
// the spool and can wait:
//
//   - a delivery starts once intake has been quiet (no message waiting to
//     be stored) for yieldQuiet; a lockstep sender's gap between an ACK and
//     its next message is far shorter, so a steady sender counts as busy;
//   - but never waits longer than yieldAtMost. That is the floor: under
//     intake that never pauses each lane still delivers at least one
//     message, or for an output that takes batches manyWhileBusy messages,
//     every yieldAtMost (50 or 200 a second), and the queue drains at full
//     speed when intake pauses;
//   - and the spool stops asking for it once it is more than a quarter full
//     (storage.Spool.IntakeIdle): then draining it comes first.
const (
	yieldQuiet  = time.Millisecond
	yieldAtMost = 20 * time.Millisecond
)

// yield waits for intake to go quiet, by the rule above. It says whether
// intake is quiet (false: the wait ran out).
func (w *Worker) yield(ctx context.Context) bool {
	g, ok := w.q.(IntakeGauge)
	if !ok {
		return true
	}
	idle, busy := g.IntakeIdle()
	if busy == nil && idle >= yieldQuiet {
		return true
	}
	limit := time.NewTimer(yieldAtMost)
	defer limit.Stop()
	settle := time.NewTimer(yieldQuiet)
	defer settle.Stop()
	for {
		var settled <-chan time.Time
		if busy == nil {
			settle.Reset(yieldQuiet - idle)
			settled = settle.C
		}
		select {
		case <-busy:
		case <-settled:
		case <-limit.C:
			return false
		case <-ctx.Done():
			return false
		}
		if idle, busy = g.IntakeIdle(); busy == nil && idle >= yieldQuiet {
			return true
		}
	}
}

// Worker delivers one destination's queue.
type Worker struct {
	name string
	q    Queue
	out  flow.Output
	o    Options

	mu     sync.Mutex
	paused bool
	resume chan struct{}
	skips  chan skipReq // an operator's spool skip, taken by a lane in back-off
	lanes  []*lane      // one unless Options.Lanes says more
	// failing counts the lanes whose first message has failed and not yet
	// been delivered or given up; the destination is down while any is.
	failing int
}

// New makes a worker for destination name.
func New(name string, q Queue, out flow.Output, o Options) *Worker {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Health == nil {
		o.Health = health.NewRegistry("", "", nil).Component(health.Destination, name, "")
	}
	n := max(o.Lanes, 1)
	w := &Worker{name: name, q: q, out: out, o: o, resume: make(chan struct{}), skips: make(chan skipReq)}
	for i := range n {
		w.lanes = append(w.lanes, newLane(i, o))
	}
	return w
}

// Pause stops deliveries after the current attempt; Resume restarts them.
func (w *Worker) Pause() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.paused {
		w.paused = true
		w.o.Health.SetState(health.Paused)
	}
}

// Resume undoes Pause.
func (w *Worker) Resume() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.paused {
		w.paused = false
		close(w.resume)
		w.resume = make(chan struct{})
		w.o.Health.SetState(health.Up)
	}
}

// Kick cuts short the current back-off of every lane, for an operator's
// "retry now".
func (w *Worker) Kick() {
	for _, l := range w.lanes {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

func (w *Worker) pausedCh() (bool, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.paused, w.resume
}

// beatEvery keeps the liveness beacon fresh while the worker waits.
const beatEvery = 5 * time.Second

// Run delivers until ctx ends. It returns nil on a clean stop.
func (w *Worker) Run(ctx context.Context) error {
	if len(w.lanes) > 1 {
		return w.runLanes(ctx)
	}
	l := w.lanes[0]
	var after uint64
	if p, _ := w.pausedCh(); !p {
		w.o.Health.SetState(health.Up)
	}
	for {
		w.beat()
		if ctx.Err() != nil {
			return nil
		}
		if p, resume := w.pausedCh(); p {
			w.waitFor(ctx, l.kick, resume, beatEvery)
			continue
		}
		batch, err := w.q.Next(w.name, after, 64)
		if err != nil {
			w.o.Health.Fail("", err.Error())
			w.o.Log.Error("destination cannot read its queue", "destination", w.name, "err", err)
			w.waitFor(ctx, l.kick, nil, l.b.Next())
			continue
		}
		if len(batch) == 0 {
			w.waitFor(ctx, l.kick, w.q.Wait(w.name), beatEvery)
			continue
		}
		for i := 0; i < len(batch); {
			if n, err := w.deliverMany(ctx, batch[i:], l); err != nil {
				return err
			} else if n > 0 {
				after = batch[i+n-1].Seq
				i += n
				continue
			}
			m := &batch[i]
			done, err := w.deliverOne(ctx, m, l)
			if err != nil {
				return err
			}
			if !done {
				break // paused or stopping: read the queue again from after
			}
			after = m.Seq
			i++
		}
	}
}

// manyAtMost bounds one DeliverBatch (and the work redone if it fails);
// manyWhileBusy bounds one taken at the floor of the yield rule, while
// senders wait, so a batch holds the CPU and the disk only briefly.
const (
	manyAtMost    = 16
	manyWhileBusy = 4
)

// deliverMany hands the first messages of ms to a BatchOutput in one call,
// when the output is one, the lane has no failed attempt on its first
// message and there is more than one message. It returns how many were
// delivered and recorded: 0 when it did not try, or the batch failed (each
// message is then tried on its own, where failures are counted and backed
// off). The error is only for a spool that cannot record the outcome.
func (w *Worker) deliverMany(ctx context.Context, ms []flow.Message, l *lane) (int, error) {
	bo, ok := w.out.(flow.BatchOutput)
	if !ok || l.attempt > 0 || len(ms) < 2 {
		return 0, nil
	}
	w.beat()
	if p, _ := w.pausedCh(); p || ctx.Err() != nil {
		return 0, nil
	}
	limit := manyAtMost
	if !w.yield(ctx) {
		limit = manyWhileBusy
	}
	ms = ms[:min(len(ms), limit)]
	ptrs := make([]*flow.Message, len(ms))
	for i := range ms {
		ms[i].Attempts = 0
		ptrs[i] = &ms[i]
	}
	start := time.Now()
	l.setState(laneBusy)
	dctx, cancel := context.WithTimeout(ctx, health.DeliverTimeout)
	err := bo.DeliverBatch(dctx, ptrs)
	cancel()
	if err != nil {
		w.o.Log.Debug("batch delivery failed; trying its messages one at a time", "destination", w.name, "messages", len(ms), "err", err)
		return 0, nil
	}
	for _, m := range ptrs {
		if err := w.delivered(m, l, start); err != nil {
			return 0, err
		}
	}
	return len(ms), nil
}

// deliverOne keeps trying one message on lane l until it is delivered or
// dead (true), or the worker is paused or stopped (false). The error is only
// for a spool that cannot record the outcome.
func (w *Worker) deliverOne(ctx context.Context, m *flow.Message, l *lane) (bool, error) {
	for {
		w.beat()
		if ctx.Err() != nil {
			return false, nil
		}
		if p, _ := w.pausedCh(); p {
			return false, nil
		}
		m.Attempts = l.attempt
		w.yield(ctx)
		start := time.Now()
		l.setState(laneBusy)
		// Bounded, so the liveness beacon never goes quiet for longer than
		// health.StallAge because of one slow peer.
		dctx, cancel := context.WithTimeout(ctx, health.DeliverTimeout)
		err := w.out.Deliver(dctx, m)
		cancel()
		if err == nil {
			return true, w.delivered(m, l, start)
		}
		if ctx.Err() != nil {
			return false, nil
		}
		dead, kerr := w.failed(ctx, m, l, err)
		if kerr != nil || dead {
			return dead, kerr
		}
		l.setState(laneBackoff)
		if dead, err := w.backoff(ctx, m, l); err != nil || dead {
			return dead, err
		}
	}
}

// delivered records a delivery and brings the lane and the destination's
// state back to normal.
func (w *Worker) delivered(m *flow.Message, l *lane, start time.Time) error {
	if err := w.q.Delivered(w.name, m.Seq); err != nil {
		return fmt.Errorf("destination %s: record delivery of %s: %w", w.name, m.GUID, err)
	}
	w.laneRecovered(l)
	l.b.Reset()
	w.o.Health.Add(health.CounterDelivered, 1)
	// With lanes, the destination is up again only when no lane still
	// holds a failed message.
	if w.downNow() == 0 && w.o.Health.State() != health.Up {
		w.o.Health.SetState(health.Up)
		w.o.Log.Info("destination delivering again", "destination", w.name, "guid", m.GUID)
	}
	if w.o.Activity != nil {
		w.o.Activity()
	}
	w.o.Log.Debug("delivered", "destination", w.name, "guid", m.GUID, "seq", m.Seq, "lane", l.idx, "took", time.Since(start))
	return nil
}

// failed counts and logs a failed attempt and, once max_attempts is reached
// or on a refusal with on_reject: dead, moves the message to dead letters
// (true).
func (w *Worker) failed(ctx context.Context, m *flow.Message, l *lane, err error) (bool, error) {
	if errors.Is(err, flow.ErrNotAttempted) {
		// Neither the message's doing nor the receiver's: written again
		// after the back-off, which bounds how often a failing card costs
		// it a write.
		w.o.Log.Warn("delivery undone by a failure elsewhere on the box; the message is written again (not counted against max_attempts)",
			"destination", w.name, "guid", m.GUID, "lane", l.idx, "err", err)
		return false, nil
	}
	l.attempt++
	w.recordAttempt(m, l, err)
	w.laneFailing(l)
	w.o.Health.Add(health.CounterFailures, 1)
	permanent := errors.Is(err, flow.ErrPermanent)
	level := slog.LevelWarn
	if permanent {
		level = slog.LevelError
	} else {
		w.o.Health.Fail(health.Down, err.Error())
	}
	w.o.Log.Log(ctx, level, "delivery failed; message stays first in line", "destination", w.name, "guid", m.GUID, "attempt", l.attempt, "lane", l.idx, "err", err)
	if w.o.MaxAttempts > 0 && l.attempt >= w.o.MaxAttempts {
		return true, w.kill(m, l, fmt.Sprintf("gave up after %s (max_attempts): %v", units.Count(l.attempt, "attempt", "attempts"), err))
	}
	if permanent {
		return w.refused(m, l, err)
	}
	return false, nil
}

// laneFailing marks l as holding a failed message.
func (w *Worker) laneFailing(l *lane) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !l.failing {
		l.failing = true
		l.troubled.Store(true)
		w.failing++
	}
}

// laneRecovered clears l's failure and its attempt count; it says whether
// the lane had been failing.
func (w *Worker) laneRecovered(l *lane) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	l.attempt = 0
	was := l.failing
	if l.failing {
		l.failing = false
		l.troubled.Store(false)
		w.failing--
	}
	return was
}

// downNow is how many lanes hold a failed message.
func (w *Worker) downNow() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failing
}

func (w *Worker) beat() {
	if w.o.Loop != nil {
		w.o.Loop.Beat()
	}
}

// waitFor waits for d, a signal on ch, an operator kick or the end of ctx,
// beating the liveness beacon meanwhile.
func (w *Worker) waitFor(ctx context.Context, kick, ch <-chan struct{}, d time.Duration) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	beat := time.NewTicker(beatEvery / 2)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			return
		case <-kick:
			return
		case <-deadline.C:
			return
		case <-beat.C:
			w.beat()
		}
	}
}
