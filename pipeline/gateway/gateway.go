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
	"sync"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/backoff"
	"github.com/hl7edge/hl7edge/pipeline/deliver"
	"github.com/hl7edge/hl7edge/pipeline/fileout"
	"github.com/hl7edge/hl7edge/pipeline/flow"
	"github.com/hl7edge/hl7edge/pipeline/health"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/intake"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/route"
	"github.com/hl7edge/hl7edge/pipeline/serialport"
	"github.com/hl7edge/hl7edge/pipeline/webservice"
	"github.com/hl7edge/hl7edge/storage"
)

// Config is the pipeline part of the configuration file.
type Config struct {
	Spool        storage.Config
	Sources      []Source
	Destinations []Destination
	DeviceID     string
	Version      string
}

// Options are the gateway's collaborators.
type Options struct {
	Log      *slog.Logger
	Health   *health.Registry
	Activity func()                    // ACT LED flash; may be nil
	Alarm    func(kind, detail string) // operator alarm; may be nil
	// MinBackoff shortens the first retry wait (tests); default 1s.
	MinBackoff time.Duration
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
	intake  *intake.Intake
	sources []*sourceSlot
	workers map[string]*deliver.Worker
	outputs map[string]flow.Output
	reping  map[string]func()
	order   []string
}

// SpoolLockWait is how long a starting gateway waits for another process
// (an operator's `hl7edge spool` command, which holds the spool for well
// under a second) to let go of the spool. It stays below systemd's default
// 90 s start timeout, so a spool that stays held still fails the start where
// the operator sees it.
const SpoolLockWait = 60 * time.Second

// New opens the spool and builds every component; nothing runs until Run.
func New(cfg Config, o Options) (*Gateway, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Health == nil {
		o.Health = health.NewRegistry(cfg.DeviceID, cfg.Version, nil)
	}
	if err := Validate(cfg.Sources, cfg.Destinations); err != nil {
		return nil, err
	}
	var routes []route.Destination
	var delivering []string
	for _, d := range cfg.Destinations {
		m, err := route.Compile(d.Match)
		if err != nil {
			return nil, fmt.Errorf("destination %q: %w", d.Name, err)
		}
		routes = append(routes, route.Destination{Name: d.Name, Rubbish: d.Type == TypeRubbish, Match: m})
		if d.Type != TypeRubbish {
			delivering = append(delivering, d.Name)
		}
	}
	sp, err := storage.Open(cfg.Spool, storage.Options{Log: o.Log.With("component", "spool"), Destinations: delivering, LockWait: SpoolLockWait})
	if err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, o: o, spool: sp, workers: map[string]*deliver.Worker{}, outputs: map[string]flow.Output{}, reping: map[string]func(){}}
	o.Health.SetSpoolProbe(sp.Health)
	g.intake = intake.New(sp, route.New(routes), intake.Options{
		Log: o.Log.With("component", "intake"), Health: o.Health, Activity: o.Activity, Alarm: o.Alarm,
	})
	if err := g.build(); err != nil {
		g.closeOutputs()
		_ = sp.Close()
		return nil, err
	}
	return g, nil
}

func (g *Gateway) build() error {
	o := g.o
	for _, d := range g.cfg.Destinations {
		// Every component tags its records with its own name.
		log := o.Log
		comp := o.Health.Component(health.Destination, d.Name, d.Type)
		var out flow.Output
		var err error
		maxBackoff := d.MaxBackoff.D()
		switch d.Type {
		case TypeRubbish:
			comp.SetState(health.Up)
			continue
		case TypeWebService:
			var ws *webservice.Destination
			ws, err = webservice.NewDestination(d.Name, *d.WebService, webservice.Options{
				Logger: log, Health: comp, DeviceName: g.cfg.DeviceID, PMVersion: g.cfg.Version, Alarm: o.Alarm,
			})
			if err == nil {
				out = ws
				g.reping[d.Name] = ws.Reping
				if maxBackoff == 0 {
					maxBackoff = d.WebService.MaxBackoff.D()
				}
			}
		case TypeMLLP:
			out, err = mllp.NewOutput(d.Name, *d.MLLP, log)
		case TypeSerial:
			out, err = serialport.NewDestination(d.Name, *d.Serial, serialport.Options{Log: log, Health: comp})
		case TypeFile:
			out, err = fileout.New(*d.File)
		}
		if err != nil {
			return fmt.Errorf("destination %q: %w", d.Name, err)
		}
		g.outputs[d.Name] = out
		g.order = append(g.order, d.Name)
		g.workers[d.Name] = deliver.New(d.Name, g.spool, out, deliver.Options{
			MaxAttempts: d.MaxAttempts, MaxBackoff: maxBackoff, MinBackoff: o.MinBackoff,
			Log: log, Health: comp, Loop: o.Health.Loop("deliver/" + d.Name),
			Activity: o.Activity, Alarm: o.Alarm,
		})
	}
	for _, s := range g.cfg.Sources {
		log := o.Log
		comp := o.Health.Component(health.Source, s.Name, s.Type)
		var loop *health.Loop
		if s.Serial != nil || s.WebService != nil {
			loop = o.Health.Loop("source/" + s.Name)
		}
		// A source is built anew for every run (after a pause or a failure):
		// a listener that has served once does not serve again.
		mk := func() (runner, error) {
			switch {
			case s.MLLP != nil:
				return mllp.NewServer(s.Name, *s.MLLP, &frameHandler{source: s.Name, intake: g.intake, max: int64(s.MLLP.MaxMessageBytes)}, log, comp)
			case s.Serial != nil:
				return serialport.NewSource(s.Name, *s.Serial, g.intake, serialport.Options{Log: log, Health: comp, Loop: loop})
			default:
				return webservice.NewSource(s.Name, *s.WebService, g.intake, webservice.Options{
					Logger: log, Health: comp, DeviceName: g.cfg.DeviceID, PMVersion: g.cfg.Version, Loop: loop, Alarm: o.Alarm,
				})
			}
		}
		r, err := mk()
		if err != nil {
			return fmt.Errorf("source %q: %w", s.Name, err)
		}
		g.sources = append(g.sources, &sourceSlot{name: s.Name, typ: s.Type, r: r, mk: mk, comp: comp, loop: loop, wake: make(chan struct{}, 1)})
	}
	return nil
}

// frameHandler answers MLLP frames through intake.
type frameHandler struct {
	source string
	intake flow.Intake
	max    int64
}

func (h *frameHandler) HandleFrame(ctx context.Context, _ string, f mllp.Frame) []byte {
	if f.Oversize {
		reason := fmt.Sprintf("message of %d bytes exceeds max_message_bytes %d of source %q: split it, or raise the limit in the gateway's configuration", f.Size, h.max, h.source)
		return hl7.ACKUnparsed(f.Data, flow.Rejected, hl7.CodeInternalError, reason, "", time.Now())
	}
	return h.intake.Accept(ctx, flow.Inbound{Source: h.source, Raw: f.Data}).ACK
}

// Intake is the gateway's intake, for sources built outside it (tests).
func (g *Gateway) Intake() flow.Intake { return g.intake }

// Spool is the gateway's spool (stats and dead letters).
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
	<-ctx.Done()
	g.o.Log.Info("stopping: sources first, then deliveries")
	stopSources()
	srcWG.Wait()
	stopWorkers()
	dstWG.Wait()
	g.closeOutputs()
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
	return fmt.Errorf("%w: %q", ErrUnknown, name)
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
	return fmt.Errorf("%w: %q", ErrUnknown, name)
}

// Reping makes a web-service destination ping before its next post, and
// retry at once.
func (g *Gateway) Reping(name string) error {
	f, ok := g.reping[name]
	if !ok {
		return fmt.Errorf("%w: %q is not a web-service destination", ErrUnknown, name)
	}
	f()
	g.workers[name].Kick()
	return nil
}

// RetryDead re-queues a destination's dead letters and wakes its worker.
func (g *Gateway) RetryDead(dest string, guids ...string) (int, error) {
	w, ok := g.workers[dest]
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrUnknown, dest)
	}
	n, err := g.spool.RetryDead(dest, guids...)
	w.Kick()
	return n, err
}

// DeadLetters lists a destination's dead letters.
func (g *Gateway) DeadLetters(dest string) ([]storage.DeadLetter, error) {
	if _, ok := g.workers[dest]; !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknown, dest)
	}
	return g.spool.DeadLetters(dest)
}

// PurgeDead deletes a destination's dead letters.
func (g *Gateway) PurgeDead(dest string, guids ...string) (int, error) {
	if _, ok := g.workers[dest]; !ok {
		return 0, fmt.Errorf("%w: %q", ErrUnknown, dest)
	}
	return g.spool.PurgeDead(dest, guids...)
}
