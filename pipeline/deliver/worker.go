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

	"github.com/hl7edge/hl7edge/pipeline/backoff"
	"github.com/hl7edge/hl7edge/pipeline/flow"
	"github.com/hl7edge/hl7edge/pipeline/health"
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
	MaxBackoff  time.Duration // back-off ceiling; default 5m
	MinBackoff  time.Duration // first back-off ceiling; default 1s
	Log         *slog.Logger
	Health      *health.Component
	Loop        *health.Loop // liveness beacon; may be nil
	Activity    func()       // ACT LED; may be nil
	Alarm       func(kind, detail string)
}

// Worker delivers one destination's queue.
type Worker struct {
	name string
	q    Queue
	out  flow.Output
	o    Options

	mu      sync.Mutex
	paused  bool
	resume  chan struct{}
	kick    chan struct{}
	attempt int
}

// New makes a worker for destination name.
func New(name string, q Queue, out flow.Output, o Options) *Worker {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Health == nil {
		o.Health = health.NewRegistry("", "", nil).Component(health.Destination, name, "")
	}
	return &Worker{name: name, q: q, out: out, o: o, resume: make(chan struct{}), kick: make(chan struct{}, 1)}
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

// Kick cuts short the current back-off, for an operator's "retry now".
func (w *Worker) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
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
	b := backoff.New(w.o.MaxBackoff)
	if w.o.MinBackoff > 0 {
		b.Min = w.o.MinBackoff
	}
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
			w.waitFor(ctx, resume, beatEvery)
			continue
		}
		batch, err := w.q.Next(w.name, after, 64)
		if err != nil {
			w.o.Health.Fail("", err.Error())
			w.o.Log.Error("destination cannot read its queue", "destination", w.name, "err", err)
			w.waitFor(ctx, nil, b.Next())
			continue
		}
		if len(batch) == 0 {
			w.waitFor(ctx, w.q.Wait(w.name), beatEvery)
			continue
		}
		for i := range batch {
			m := &batch[i]
			done, err := w.deliverOne(ctx, m, b)
			if err != nil {
				return err
			}
			if !done {
				break // paused or stopping: read the queue again from after
			}
			after = m.Seq
		}
	}
}

// deliverOne keeps trying one message until it is delivered or dead (true),
// or the worker is paused or stopped (false). The error is only for a spool
// that cannot record the outcome.
func (w *Worker) deliverOne(ctx context.Context, m *flow.Message, b *backoff.Backoff) (bool, error) {
	for {
		w.beat()
		if ctx.Err() != nil {
			return false, nil
		}
		if p, _ := w.pausedCh(); p {
			return false, nil
		}
		m.Attempts = w.attempt
		start := time.Now()
		// Bounded, so the liveness beacon never goes quiet for longer than
		// health.StallAge because of one slow peer.
		dctx, cancel := context.WithTimeout(ctx, health.DeliverTimeout)
		err := w.out.Deliver(dctx, m)
		cancel()
		if err == nil {
			if err := w.q.Delivered(w.name, m.Seq); err != nil {
				return false, fmt.Errorf("destination %s: record delivery of %s: %w", w.name, m.GUID, err)
			}
			w.attempt = 0
			b.Reset()
			w.o.Health.Add(health.CounterDelivered, 1)
			if w.o.Health.State() != health.Up {
				w.o.Health.SetState(health.Up)
				w.o.Log.Info("destination delivering again", "destination", w.name, "guid", m.GUID)
			}
			if w.o.Activity != nil {
				w.o.Activity()
			}
			w.o.Log.Debug("delivered", "destination", w.name, "guid", m.GUID, "seq", m.Seq, "took", time.Since(start))
			return true, nil
		}
		if ctx.Err() != nil {
			return false, nil
		}
		w.attempt++
		w.o.Health.Add(health.CounterFailures, 1)
		w.o.Health.Fail(health.Down, err.Error())
		level := slog.LevelWarn
		if errors.Is(err, flow.ErrPermanent) {
			level = slog.LevelError
		}
		w.o.Log.Log(ctx, level, "delivery failed; message stays first in line", "destination", w.name, "guid", m.GUID, "attempt", w.attempt, "err", err)
		if w.o.MaxAttempts > 0 && w.attempt >= w.o.MaxAttempts {
			reason := fmt.Sprintf("gave up after %d attempts (max_attempts): %v", w.attempt, err)
			if kerr := w.q.Kill(w.name, m.Seq, reason, w.attempt); kerr != nil {
				return false, fmt.Errorf("destination %s: move %s to dead letters: %w", w.name, m.GUID, kerr)
			}
			w.o.Health.Add(health.CounterDead, 1)
			w.o.Log.Error("message moved to dead letters", "destination", w.name, "guid", m.GUID, "attempts", w.attempt)
			if w.o.Alarm != nil {
				w.o.Alarm(health.AlarmDeadLetter, fmt.Sprintf("destination %s: message %s moved to dead letters after %d attempts", w.name, m.GUID, w.attempt))
			}
			w.attempt = 0
			return true, nil
		}
		w.waitFor(ctx, nil, b.Next())
	}
}

func (w *Worker) beat() {
	if w.o.Loop != nil {
		w.o.Loop.Beat()
	}
}

// waitFor waits for d, a signal on ch, an operator kick or the end of ctx,
// beating the liveness beacon meanwhile.
func (w *Worker) waitFor(ctx context.Context, ch <-chan struct{}, d time.Duration) {
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
		case <-w.kick:
			return
		case <-deadline.C:
			return
		case <-beat.C:
			w.beat()
		}
	}
}
