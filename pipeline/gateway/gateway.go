// Package gateway joins the pipeline: sources hand messages to intake, intake
// routes them into the spool, and one delivery worker per destination drains
// its queue. It owns every goroutine it starts; Run returns when they have
// all stopped and the spool is closed.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/deliver"
	"github.com/hl7edge/hl7edge/pipeline/intake"
	"github.com/hl7edge/hl7edge/pipeline/route"
	"github.com/hl7edge/hl7edge/pipeline/vocab/backoff"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/storage"
	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// Config is the pipeline part of the configuration file.
type Config struct {
	Spool        storage.Config
	Sources      []Source
	Destinations []Destination
	DeviceID     string
	Version      string
	// Types are the source and destination types the entries may name;
	// nil: DefaultTypes.
	Types *component.Types
}

// Options are the gateway's collaborators.
type Options struct {
	Log      *slog.Logger
	Health   *health.Registry
	Activity func()                    // ACT LED flash; may be nil
	Alarm    func(kind, detail string) // operator alarm; may be nil
	// MinBackoff shortens the first retry wait (tests); default 1s.
	MinBackoff time.Duration
	// Gates are the disk sync gates of the file systems the gateway writes
	// to, shared with the device's own state files beside the spool
	// (storage/syncgate). nil: a set of the gateway's own.
	Gates *syncgate.Gates
}

// runner is anything that runs until its context ends.
type runner interface {
	Run(ctx context.Context) error
}

type sourceSlot struct {
	name   string
	typ    string
	r      runner                 // the next run's instance; nil once used
	mk     func() (runner, error) // builds a fresh instance
	comp   *health.Component
	loop   *health.Loop // beaten by the source while it runs, by its supervisor otherwise
	mu     sync.Mutex
	paused bool
	cancel context.CancelFunc
	wake   chan struct{}
}

// Gateway is one running pipeline.
type Gateway struct {
	cfg     Config
	o       Options
	spool   *storage.Spool
	gates   *syncgate.Gates // one per file system: the spool and file destinations share them
	intake  *intake.Intake
	sources []*sourceSlot
	workers map[string]*deliver.Worker
	outputs map[string]flow.Output
	reping  map[string]func()
	order   []string
	// unreadable is why the spool could not be opened; spool is nil then.
	unreadable error
	// reroute routes an undeliverable message again by the current rules.
	reroute Rerouter
}

// SpoolLockWait is how long a starting gateway waits for another process
// (an operator's `hl7edge spool` command, which holds the spool for well
// under a second) to let go of the spool. It stays below systemd's default
// 90 s start timeout, so a spool that stays held still fails the start where
// the operator sees it. Another daemon on the same spool holds it for good:
// the wait says so (storage.WaitForLock) and ends with the daemon's SIGTERM.
const SpoolLockWait = 60 * time.Second

// spoolLockRace is Open's own wait, after NewContext saw the lock free: for
// a process that took it in between.
const spoolLockRace = 5 * time.Second

// New is NewContext with a wait for the spool lock that nothing cuts short.
func New(cfg Config, o Options) (*Gateway, error) {
	return NewContext(context.Background(), cfg, o)
}

// NewContext opens the spool and builds every component; nothing runs until
// Run. ctx ends the wait for a spool another process holds (a daemon's
// SIGTERM).
func NewContext(ctx context.Context, cfg Config, o Options) (*Gateway, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Health == nil {
		o.Health = health.NewRegistry(cfg.DeviceID, cfg.Version, nil)
	}
	if cfg.Types == nil {
		cfg.Types = DefaultTypes()
	}
	if err := Validate(cfg.Types, cfg.Sources, cfg.Destinations); err != nil {
		return nil, err
	}
	var routes []route.Destination
	for _, d := range cfg.Destinations {
		m, err := route.Compile(d.Match)
		if err != nil {
			return nil, fmt.Errorf("destination %q: %w", d.Name, err)
		}
		t, _ := cfg.Types.Destination(d.Type)
		routes = append(routes, route.Destination{Name: d.Name, Rubbish: t.Discards, Match: m})
	}
	delivering := Delivering(cfg.Types, cfg.Destinations)
	log := o.Log.With("component", "spool")
	if err := storage.WaitForLock(ctx, cfg.Spool.Dir, SpoolLockWait, log); err != nil {
		return nil, err
	}
	gates := o.Gates
	if gates == nil {
		gates = syncgate.NewGates()
	}
	gate, err := gates.For(cfg.Spool.Dir)
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", cfg.Spool.Dir, err)
	}
	sp, err := storage.Open(cfg.Spool, storage.Options{Log: log, Destinations: delivering, LockWait: spoolLockRace, Gate: gate})
	if errors.Is(err, storage.ErrUnreadable) {
		return newUnreadable(cfg, o, routes, err)
	}
	if err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, o: o, spool: sp, gates: gates, workers: map[string]*deliver.Worker{}, outputs: map[string]flow.Output{}, reping: map[string]func(){}}
	o.Health.SetSpoolProbe(spoolHealth(sp))
	router := route.New(routes)
	g.reroute = rerouter(router)
	g.intake = intake.New(sp, router, intake.Options{
		Log: o.Log.With("component", "intake"), Health: o.Health, Activity: o.Activity, Alarm: o.Alarm,
	})
	if err := g.build(); err != nil {
		g.closeOutputs()
		_ = sp.Close()
		return nil, err
	}
	return g, nil
}

// newUnreadable is the gateway of a box whose spool cannot be opened (after
// a power cut, a failing card). It must neither start empty in silence,
// which would hide every message the spool holds, nor delete anything, nor
// accept messages it has nowhere durable to keep. So its sources run and
// every message is answered AE (senders keep their copies and retry; a pull
// source acknowledges nothing upstream), nothing is delivered, the spool's
// health carries the cause (FAULT 5, storage error), and Run raises a
// storage_error alarm naming it. `hl7edge spool salvage` is the way out
// (docs/power-loss.md).
func newUnreadable(cfg Config, o Options, routes []route.Destination, cause error) (*Gateway, error) {
	g := &Gateway{cfg: cfg, o: o, unreadable: cause, workers: map[string]*deliver.Worker{}, outputs: map[string]flow.Output{}, reping: map[string]func(){}}
	detail := cause.Error()
	o.Log.Error("spool unreadable: every message is answered AE and nothing is delivered until it is salvaged (docs/power-loss.md)", "err", cause)
	o.Health.SetSpoolProbe(func() health.SpoolSnapshot { return health.SpoolSnapshot{Error: detail} })
	g.intake = intake.New(refusingSpool{cause}, route.New(routes), intake.Options{
		Log: o.Log.With("component", "intake"), Health: o.Health, Activity: o.Activity, Alarm: o.Alarm,
	})
	for _, s := range cfg.Sources {
		if err := g.buildSource(s); err != nil {
			return nil, fmt.Errorf("source %q: %w", s.Name, err)
		}
	}
	for _, d := range cfg.Destinations {
		c := o.Health.Component(health.Destination, d.Name, d.Type)
		if t, ok := cfg.Types.Destination(d.Type); ok && t.Upstream {
			c.MarkUpstream()
		}
		c.SetState(health.Down)
	}
	return g, nil
}

// refusingSpool stands in for a spool that could not be opened: every
// Append fails with the reason, so intake answers AE.
type refusingSpool struct{ cause error }

func (r refusingSpool) Append(context.Context, storage.Entry) (storage.Result, error) {
	return storage.Result{}, r.cause
}

// SpoolError is why the spool could not be opened, nil when it is open.
func (g *Gateway) SpoolError() error { return g.unreadable }

func (g *Gateway) build() error {
	for _, d := range g.cfg.Destinations {
		if err := g.buildDestination(d); err != nil {
			return fmt.Errorf("destination %q: %w", d.Name, err)
		}
	}
	for _, s := range g.cfg.Sources {
		if err := g.buildSource(s); err != nil {
			return fmt.Errorf("source %q: %w", s.Name, err)
		}
	}
	return nil
}

// deps are what every component of kind is given.
func (g *Gateway) deps(name string, comp *health.Component) component.Deps {
	// Each component tags its own records with its name.
	return component.Deps{
		Name: name, Log: g.o.Log, Health: comp, Alarm: g.o.Alarm, Activity: g.o.Activity,
		DeviceID: g.cfg.DeviceID, Version: g.cfg.Version, Gates: g.gates,
	}
}

// buildDestination makes a destination's output and the worker that
// drains its queue; a rubbish bin has neither.
func (g *Gateway) buildDestination(d Destination) error {
	t, ok := g.cfg.Types.Destination(d.Type)
	if !ok {
		return fmt.Errorf("type %q is not registered", d.Type)
	}
	comp := g.o.Health.Component(health.Destination, d.Name, d.Type)
	if t.Upstream {
		comp.MarkUpstream()
	}
	if t.Discards {
		comp.SetState(health.Up)
		return nil
	}
	deps := g.deps(d.Name, comp)
	deps.Lanes = max(d.Lanes, 1)
	out, err := t.Build(d.Config, deps)
	if err != nil {
		return err
	}
	if r, ok := out.(component.Repinger); ok {
		g.reping[d.Name] = r.Reping
	}
	maxBackoff := d.MaxBackoff.D()
	if l, ok := d.Config.(component.BackoffLimiter); ok && maxBackoff == 0 {
		maxBackoff = l.MaxBackoffDefault()
	}
	g.outputs[d.Name] = out
	g.order = append(g.order, d.Name)
	g.workers[d.Name] = deliver.New(d.Name, spoolQueue{g.spool}, out, deliver.Options{
		MaxAttempts: d.MaxAttempts, OnReject: d.OnReject, MaxBackoff: maxBackoff, MinBackoff: g.o.MinBackoff,
		Log: g.o.Log, Health: comp, Loop: g.o.Health.Loop("deliver/" + d.Name),
		Activity: g.o.Activity, Alarm: g.o.Alarm,
		Lanes: d.Lanes, LaneKey: deliver.KeyAt(d.LaneKeyPath()),
	})
	return nil
}

// buildSource makes a source's first instance and the means to make the
// next: a source is built anew for every run (after a pause or a failure),
// as a listener that has served once does not serve again.
func (g *Gateway) buildSource(s Source) error {
	t, ok := g.cfg.Types.Source(s.Type)
	if !ok {
		return fmt.Errorf("type %q is not registered", s.Type)
	}
	comp := g.o.Health.Component(health.Source, s.Name, s.Type)
	deps := g.deps(s.Name, comp)
	deps.Intake = g.intake
	if t.Liveness {
		deps.Loop = g.o.Health.Loop("source/" + s.Name)
	}
	mk := func() (runner, error) { return t.Build(s.Config, deps) }
	r, err := mk()
	if err != nil {
		return err
	}
	g.sources = append(g.sources, &sourceSlot{name: s.Name, typ: s.Type, r: r, mk: mk, comp: comp, loop: deps.Loop, wake: make(chan struct{}, 1)})
	return nil
}

// Intake is the gateway's intake, for sources built outside it (tests).
func (g *Gateway) Intake() flow.Intake { return g.intake }

// Spool is the gateway's spool (stats and dead letters); nil when it could
// not be opened (SpoolError says why).
func (g *Gateway) Spool() *storage.Spool { return g.spool }

// Run runs every source and worker until ctx ends, then stops them in order
// (sources first, so every message in flight is answered; then workers) and
// closes the spool.
func (g *Gateway) Run(ctx context.Context) error {
	srcCtx, stopSources := context.WithCancel(context.Background())
	dstCtx, stopWorkers := context.WithCancel(context.Background())
	defer stopSources()
	defer stopWorkers()
	var srcWG, dstWG sync.WaitGroup
	for _, name := range g.order {
		w := g.workers[name]
		dstWG.Go(func() {
			if err := w.Run(dstCtx); err != nil {
				g.o.Log.Error("delivery worker stopped", "destination", name, "err", err)
				if g.o.Alarm != nil {
					g.o.Alarm(health.AlarmStorageError, err.Error())
				}
			}
		})
	}
	for _, s := range g.sources {
		srcWG.Go(func() { g.superviseSource(srcCtx, s) })
	}
	if g.unreadable != nil {
		if g.o.Alarm != nil {
			g.o.Alarm(health.AlarmStorageError, g.unreadable.Error())
		}
	}
	<-ctx.Done()
	g.o.Log.Info("stopping: sources first, then deliveries")
	stopSources()
	srcWG.Wait()
	stopWorkers()
	dstWG.Wait()
	g.closeOutputs()
	if g.spool == nil {
		return nil
	}
	return g.spool.Close()
}

func (g *Gateway) closeOutputs() {
	for name, out := range g.outputs {
		if err := out.Close(); err != nil {
			g.o.Log.Warn("closing destination", "destination", name, "err", err)
		}
	}
}

// superviseSource keeps a source running: restarted with back-off when it
// fails (a port in use, a device gone), held while paused.
func (g *Gateway) superviseSource(ctx context.Context, s *sourceSlot) {
	b := backoff.New(time.Minute)
	for ctx.Err() == nil {
		s.mu.Lock()
		if s.paused {
			s.mu.Unlock()
			s.idle(ctx, s.wake, 0)
			continue
		}
		r := s.r
		s.r = nil
		s.mu.Unlock()
		if r == nil {
			var err error
			if r, err = s.mk(); err != nil {
				s.comp.Fail(health.Down, err.Error())
				g.o.Log.Error("source cannot be rebuilt; retrying after back-off", "source", s.name, "err", err)
				s.idle(ctx, nil, b.Next())
				continue
			}
		}
		s.mu.Lock()
		if s.paused { // paused while it was being built
			s.mu.Unlock()
			continue
		}
		runCtx, cancel := context.WithCancel(ctx)
		s.cancel = cancel
		s.mu.Unlock()
		start := time.Now()
		err := r.Run(runCtx)
		cancel()
		if ctx.Err() != nil {
			s.comp.SetState(health.Stopped)
			return
		}
		s.mu.Lock()
		paused := s.paused
		s.mu.Unlock()
		if paused {
			s.comp.SetState(health.Paused)
			continue
		}
		if err == nil {
			err = errors.New("stopped unexpectedly")
		}
		if time.Since(start) > time.Minute {
			b.Reset()
		}
		s.comp.Fail(health.Down, err.Error())
		g.o.Log.Error("source failed; restarting after back-off", "source", s.name, "err", err)
		s.idle(ctx, nil, b.Next())
	}
}

// idle waits for a wake-up, d (0: no limit) or the end of ctx, keeping the
// source's liveness beacon fresh: a paused or backing-off source is not hung.
func (s *sourceSlot) idle(ctx context.Context, wake <-chan struct{}, d time.Duration) {
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	beat := time.NewTicker(5 * time.Second)
	defer beat.Stop()
	for {
		if s.loop != nil {
			s.loop.Beat()
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
			return
		case <-timeout:
			return
		case <-beat.C:
		}
	}
}

// ErrUnknown is returned for a name that is not configured.
var ErrUnknown = errors.New("no such source or destination")

// unknown says why name has no worker or source: a rubbish bin has
// neither queue nor dead letters and cannot be paused; anything else is not
// configured, and the names that are follow.
func (g *Gateway) unknown(name string) error {
	var names []string
	for _, d := range g.cfg.Destinations {
		if t, ok := g.cfg.Types.Destination(d.Type); ok && t.Discards {
			if d.Name == name {
				return fmt.Errorf("%w: %q is a rubbish bin: it eats what it matches at once and keeps no queue or dead letters to act on", ErrUnknown, name)
			}
			continue
		}
		names = append(names, d.Name)
	}
	for _, s := range g.cfg.Sources {
		names = append(names, s.Name)
	}
	return fmt.Errorf("%w: %q (configured: %s)", ErrUnknown, name, strings.Join(names, ", "))
}

// Pause stops a source (it stops listening or reading) or a destination (it
// stops delivering; its queue grows).
func (g *Gateway) Pause(name string) error {
	if w, ok := g.workers[name]; ok {
		w.Pause()
		return nil
	}
	for _, s := range g.sources {
		if s.name == name {
			s.mu.Lock()
			s.paused = true
			if s.cancel != nil {
				s.cancel()
			}
			s.mu.Unlock()
			s.comp.SetState(health.Paused)
			return nil
		}
	}
	return g.unknown(name)
}

// Resume undoes Pause.
func (g *Gateway) Resume(name string) error {
	if w, ok := g.workers[name]; ok {
		w.Resume()
		w.Kick()
		return nil
	}
	for _, s := range g.sources {
		if s.name == name {
			s.mu.Lock()
			s.paused = false
			s.mu.Unlock()
			select {
			case s.wake <- struct{}{}:
			default:
			}
			return nil
		}
	}
	return g.unknown(name)
}

// Reping makes a web-service destination ping before its next post, and
// retry at once.
func (g *Gateway) Reping(name string) error {
	f, ok := g.reping[name]
	if !ok {
		if _, ok := g.workers[name]; ok {
			return fmt.Errorf("%q is not a web-service destination: only those ping", name)
		}
		return g.unknown(name)
	}
	f()
	g.workers[name].Kick()
	return nil
}

// RetryDead re-queues a destination's dead letters and wakes its worker.
func (g *Gateway) RetryDead(dest string, guids ...string) (int, error) {
	if g.unreadable != nil {
		return 0, g.unreadable
	}
	w, ok := g.workers[dest]
	if !ok {
		return 0, g.unknown(dest)
	}
	n, err := g.spool.RetryDead(dest, guids...)
	w.Kick()
	return n, err
}

// Skip moves the message a destination keeps failing on to its dead
// letters with the operator's reason, and returns its GUID.
func (g *Gateway) Skip(ctx context.Context, dest, reason string) (string, error) {
	if g.unreadable != nil {
		return "", g.unreadable
	}
	w, ok := g.workers[dest]
	if !ok {
		return "", g.unknown(dest)
	}
	return w.Skip(ctx, reason)
}

// DeadLetters lists a destination's dead letters, each with its first
// segment only (storage.DeadLetterHeads): what an operator's list needs,
// in memory that stays bounded whatever the letters hold.
func (g *Gateway) DeadLetters(dest string) ([]storage.DeadLetter, error) {
	if g.unreadable != nil {
		return nil, g.unreadable
	}
	if _, ok := g.workers[dest]; !ok {
		return nil, g.unknown(dest)
	}
	return g.spool.DeadLetterHeads(dest)
}

// PurgeDead deletes a destination's dead letters.
func (g *Gateway) PurgeDead(dest string, guids ...string) (int, error) {
	if g.unreadable != nil {
		return 0, g.unreadable
	}
	if _, ok := g.workers[dest]; !ok {
		return 0, g.unknown(dest)
	}
	return g.spool.PurgeDead(dest, guids...)
}

// Trace reads message traces (storage.Spool.Trace).
func (g *Gateway) Trace(q storage.TraceQuery) (storage.TraceResult, error) {
	if g.unreadable != nil {
		return storage.TraceResult{}, g.unreadable
	}
	return g.spool.Trace(q)
}

// Replay queues retained messages again for a destination and wakes its
// worker (storage.Spool.Replay).
func (g *Gateway) Replay(ctx context.Context, r storage.ReplayRequest) (storage.ReplayResult, error) {
	if g.unreadable != nil {
		return storage.ReplayResult{}, g.unreadable
	}
	w, ok := g.workers[r.To]
	if !ok {
		return storage.ReplayResult{}, fmt.Errorf("%w: %q is not a delivering destination", ErrUnknown, r.To)
	}
	res, err := g.spool.Replay(ctx, r)
	w.Kick()
	return res, err
}
