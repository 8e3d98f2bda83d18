// Package appliance runs the whole box: the pipeline, the MQTT agent, the
// LEDs, the systemd watchdog and the admin socket, all built from one
// configuration file and all stopped together. A restart or a configuration
// change rebuilds them in-process; a configuration that leaves the box
// unhealthy is rolled back.
package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hl7edge/hl7edge/board"
	"github.com/hl7edge/hl7edge/board/blockdev"
	"github.com/hl7edge/hl7edge/board/led"
	"github.com/hl7edge/hl7edge/device/admin"
	"github.com/hl7edge/hl7edge/device/atomicfile"
	"github.com/hl7edge/hl7edge/device/cardwatch"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/device/firmware"
	"github.com/hl7edge/hl7edge/device/frontpanel"
	"github.com/hl7edge/hl7edge/device/mqttagent"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/device/watchdog"
	"github.com/hl7edge/hl7edge/pipeline/gateway"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// Options configure the appliance.
type Options struct {
	ConfigPath string
	Version    string
	LogOut     io.Writer // default stderr
	// Board replaces the board the configuration names (demo, tests).
	Board func(cfg *config.Config, log *slog.Logger) (board.Board, error)
	// ApplyGrace is how long a new configuration has to prove healthy.
	ApplyGrace time.Duration
	// MinBackoff shortens delivery retry waits (tests).
	MinBackoff time.Duration
	// Started is called after every (re)start with the running box (tests, demo).
	Started func(*Box)
	// StateDir holds the replay record of signed commands, at a fixed path
	// that no configuration moves ($STATE_DIRECTORY under systemd). Empty:
	// the state directory of the configuration the process started with,
	// kept for the life of the process.
	StateDir string
	// UnsignedRestartEvery is the least time between pipeline starts that
	// an unsigned MQTT restart may make; default DefaultUnsignedRestartEvery.
	UnsignedRestartEvery time.Duration
	// BlockDevices reads the card under the spool; nil is the kernel's
	// sysfs (blockdev.Finder). Tests give a fake sysfs tree.
	BlockDevices cardwatch.Reader
	// CardEvery is how often the card is read; default cardwatch.Every.
	CardEvery time.Duration
	// Gates are the disk sync gates every writer of the process shares:
	// the spool and file destinations, and the state files beside them
	// (session counter, replay record, firmware state, the configuration
	// file). nil: the appliance's own. Tests give theirs to fail a sync.
	Gates *syncgate.Gates
}

// DefaultUnsignedRestartEvery bounds what a leaked broker password can do
// with restarts: each resets every sender's connection for a moment, so at
// most one every 10 minutes, counting the box's own starts
// (docs/mqtt-api.md). Signed restarts and the service manager's are not
// bounded.
const DefaultUnsignedRestartEvery = 10 * time.Minute

// Box is one running build of the appliance.
type Box struct {
	Config   *config.Config
	Gateway  *gateway.Gateway
	Registry *health.Registry
	Agent    *mqttagent.Agent
	Commands *command.Dispatcher
	Log      *slog.Logger
}

// Appliance restarts Boxes until its context ends.
type Appliance struct {
	o       Options
	ring    *logRing
	restart chan string
	// throttle bounds unsigned disruptive MQTT commands for the whole
	// process, across the boxes it builds.
	throttle *command.Throttle
	// relaunch asks Run to end with ErrRelaunch (a firmware switch).
	relaunch chan string

	// alarms outlive every box: a restart (a configuration applied or
	// rolled back) must not lose the alarms that explain it.
	alarms *health.Alarms
	// card watches the spool's card across boxes, so its write rate and
	// the storage_wearing already raised survive a restart.
	card *cardwatch.Watch

	mu      sync.Mutex
	pending *pendingApply
	// outcomes are the last configurations applied, by command id, for
	// config-apply-result (hl7edge config apply --wait).
	outcomes []ApplyOutcome
	// notices are alarms that happened while no box (and so no MQTT agent)
	// was running; the next box raises them.
	notices [][2]string
}

type pendingApply struct {
	id       string
	previous []byte
	grace    time.Duration
	before   health.Snapshot
}

// Run runs the appliance until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.LogOut == nil {
		o.LogOut = os.Stderr
	}
	if o.ApplyGrace <= 0 {
		o.ApplyGrace = time.Minute
	}
	if o.UnsignedRestartEvery <= 0 {
		o.UnsignedRestartEvery = DefaultUnsignedRestartEvery
	}
	if o.Gates == nil {
		// One set for the life of the process, across the boxes it builds:
		// a failed flush is news to every writer on the card, whichever
		// box it happened in.
		o.Gates = syncgate.NewGates()
	}
	a := &Appliance{o: o, ring: newLogRing(1000), restart: make(chan string, 1), relaunch: make(chan string, 1), alarms: health.NewAlarms(),
		throttle: command.NewThrottle(nil, map[string]time.Duration{command.Restart: o.UnsignedRestartEvery})}
	if err := a.recoverTrial(); err != nil {
		return a.fatal(nil, err)
	}
	for {
		cfg, err := config.Load(o.ConfigPath)
		if err == nil && a.o.StateDir == "" {
			a.o.StateDir = cfg.StateDir()
		}
		if err == nil {
			var again bool
			again, err = a.runOnce(ctx, cfg)
			if ctx.Err() != nil {
				return nil
			}
			if err == nil && again {
				continue
			}
			if errors.Is(err, ErrRelaunch) {
				return err
			}
		}
		if err != nil {
			rolled, rerr := a.rollback(err)
			if rolled {
				continue
			}
			if rerr != nil {
				err = rerr
			}
			return a.fatal(cfg, err)
		}
		return nil
	}
}

// LoggedError is an error Run has already written to the log as a record,
// so that the reason the daemon stopped is as structured as everything it
// logged before (journal queries by level or key find it); the caller
// should not print it again.
type LoggedError struct{ Err error }

func (e *LoggedError) Error() string { return e.Err.Error() }
func (e *LoggedError) Unwrap() error { return e.Err }

// fatal logs why Run stops, in the configured format when the configuration
// loaded and as text otherwise.
func (a *Appliance) fatal(cfg *config.Config, err error) error {
	log := slog.New(slog.NewTextHandler(a.o.LogOut, nil))
	if cfg != nil {
		log = a.logger(cfg)
	}
	log.Error("hl7edge cannot run", "err", err)
	return &LoggedError{Err: err}
}

// writeConfig replaces the configuration file path with data, its syncs through
// the gates of the spool beside it. When another writer's sync failed
// meanwhile it writes once more: data is whole in memory, and a write begun
// after the failure is told the truth about its own.
func (a *Appliance) writeConfig(path string, data []byte) error {
	err := atomicfile.Write(a.o.Gates, path, data, 0o640)
	if errors.Is(err, syncgate.ErrFailedSince) {
		err = atomicfile.Write(a.o.Gates, path, data, 0o640)
	}
	if errors.Is(err, syncgate.ErrFailedSince) {
		return fmt.Errorf("%w; disk syncs on the card failed twice while it was written: check the storage health (docs/power-loss.md)", err)
	}
	return err
}

// rollback restores the previous configuration after a failed apply. It
// reports whether it did and, when writing it back failed, the error the
// daemon stops with: the next start runs whatever the file holds.
func (a *Appliance) rollback(cause error) (bool, error) {
	a.mu.Lock()
	p := a.pending
	a.pending = nil
	a.mu.Unlock()
	if p == nil {
		return false, nil
	}
	if err := a.writeConfig(a.o.ConfigPath, p.previous); err != nil {
		err = fmt.Errorf("configuration from command %s could not start (%w), and putting the previous one back failed: %w; %s may still hold the new one: put the previous one back by hand before the next start",
			p.id, cause, err, a.o.ConfigPath)
		a.settle(p.id, ApplyRollbackFailed, err.Error())
		return false, err
	}
	detail := fmt.Sprintf("configuration from command %s could not start and was rolled back: %v", p.id, cause)
	fmt.Fprintf(a.o.LogOut, "hl7edge: %s\n", detail)
	a.settle(p.id, ApplyRolledBack, detail)
	a.endTrial(p.id)
	a.mu.Lock()
	a.notices = append(a.notices, [2]string{AlarmConfigRolledBack, detail})
	a.mu.Unlock()
	return true, nil
}

func (a *Appliance) logger(cfg *config.Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(a.o.LogOut, hopts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(a.o.LogOut, hopts)
	}
	return slog.New(newTee(h, a.ring, level))
}

func clockSynced() bool {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	return err == nil && state != unix.TIME_ERROR
}

// runOnce builds and runs one Box. It reports whether a restart was asked for.
func (a *Appliance) runOnce(parent context.Context, cfg *config.Config) (bool, error) {
	p, err := a.build(parent, cfg)
	if err != nil {
		return false, err
	}
	defer p.brd.Close()
	a.throttle.Ran(command.Restart) // a start resets every connection too
	return a.serve(parent, cfg, p)
}

// parts are one box's components, built and wired but not yet running.
type parts struct {
	log    *slog.Logger
	reg    *health.Registry
	disp   *command.Dispatcher
	brd    board.Board
	engine *frontpanel.Engine
	agent  *mqttagent.Agent
	gw     *gateway.Gateway
	box    *Box
	fw     *firmware.Manager
	card   *cardwatch.Watch
	alarm  func(kind, detail string)
}

// build makes one box's components from cfg and wires them together. On
// error it leaves nothing open.
func (a *Appliance) build(ctx context.Context, cfg *config.Config) (_ *parts, err error) {
	p := &parts{log: a.logger(cfg)}
	for _, w := range cfg.SecretWarnings() {
		p.log.Warn("secret file readable by other users", "detail", w)
	}
	p.reg = health.NewRegistry(cfg.Device.ID, a.o.Version, nil)
	p.reg.UseAlarms(a.alarms)
	p.reg.SetLabels(cfg.Device.Labels)
	p.reg.SetClockProbe(clockSynced)
	p.card = a.cardWatch(cfg)
	p.reg.SetStorageProbe(p.card.Snapshot)
	p.disp = command.NewDispatcher(nil)
	if p.brd, p.engine, err = a.openLEDs(cfg, p.log, p.reg); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			p.brd.Close()
		}
	}()
	keys, err := trust.ParseKeys(cfg.Trust.Keys)
	if err != nil {
		return nil, err
	}
	// The MQTT session counter and the used command ids live beside the
	// spool, which the gateway creates only later.
	if err := os.MkdirAll(cfg.StateDir(), 0o700); err != nil {
		return nil, fmt.Errorf("state directory %s (the parent of spool.dir): %w", cfg.StateDir(), err)
	}
	if p.agent, err = a.newAgent(cfg, p.log, p.reg, p.disp, keys); err != nil {
		return nil, err
	}
	p.alarm = func(kind, detail string) {
		p.log.Warn("alarm", "kind", kind, "detail", detail)
		if ended := allClearOf(kind); ended != "" {
			p.reg.ClearAlarm(ended)
		} else {
			p.reg.RaiseAlarm(kind, detail)
		}
		if p.agent.Enabled() {
			p.agent.Alarm(kind, detail)
		}
	}
	p.gw, err = gateway.NewContext(ctx, cfg.Gateway(a.o.Version), gateway.Options{
		Log: p.log, Health: p.reg, Activity: p.engine.Activity, Alarm: p.alarm, MinBackoff: a.o.MinBackoff, Gates: a.o.Gates,
	})
	if err != nil {
		return nil, err
	}
	p.box = &Box{Config: cfg, Gateway: p.gw, Registry: p.reg, Agent: p.agent, Commands: p.disp, Log: p.log}
	a.register(p.box, p.engine, p.alarm)
	p.fw = a.firmwareManager(cfg, p.log, keys, p.reg, p.agent, p.disp, p.alarm)
	return p, nil
}

// cardWatch is the watch of the card under cfg's spool directory: the one
// the previous box used when the directory is the same.
func (a *Appliance) cardWatch(cfg *config.Config) *cardwatch.Watch {
	if a.card == nil || a.card.Dir() != cfg.Spool.Dir {
		r := a.o.BlockDevices
		if r == nil {
			r = blockdev.Finder{}
		}
		a.card = cardwatch.New(cfg.Spool.Dir, r, nil)
	}
	return a.card
}

// openLEDs opens the board (or the one Options.Board makes) and the LED
// engine that drives its pins from the health registry.
func (a *Appliance) openLEDs(cfg *config.Config, log *slog.Logger, reg *health.Registry) (board.Board, *frontpanel.Engine, error) {
	openBoard := a.o.Board
	if openBoard == nil {
		openBoard = func(cfg *config.Config, log *slog.Logger) (board.Board, error) {
			return board.Open(cfg.Device.Board, cfg.LEDs, log)
		}
	}
	brd, err := openBoard(cfg, log)
	if err != nil {
		return nil, nil, fmt.Errorf("board %q: %w", cfg.Device.Board, err)
	}
	lopts := frontpanel.Options{Pins: brd.Pins(), Snapshot: reg.Snapshot, Beacon: reg.Loop("leds"), Log: log}
	if d, ok := brd.(led.Describer); ok {
		lopts.Describe = d.Describe // the sim board prints what the LEDs mean, not each blink
	}
	engine, err := frontpanel.New(lopts)
	if err != nil {
		brd.Close()
		return nil, nil, fmt.Errorf("leds: %w", err)
	}
	return brd, engine, nil
}

// ReplayRecord is the replay record's file name in Options.StateDir.
const ReplayRecord = "signed-commands.json"

// newAgent makes the MQTT agent; with trust keys configured it accepts
// signed commands.
func (a *Appliance) newAgent(cfg *config.Config, log *slog.Logger, reg *health.Registry, disp *command.Dispatcher, keys *trust.Keys) (*mqttagent.Agent, error) {
	agentOpts := mqttagent.Options{
		DeviceID: cfg.Device.ID, Version: a.o.Version, Labels: cfg.Device.Labels, Log: log, Registry: reg, Dispatcher: disp,
		SessionFile: filepath.Join(cfg.StateDir(), "mqtt.session"), Throttle: a.throttle, Gates: a.o.Gates,
	}
	if keys.Len() > 0 {
		g := trust.NewGate(keys, cfg.Device.ID, filepath.Join(a.o.StateDir, ReplayRecord), a.o.Gates, nil)
		agentOpts.Signed, agentOpts.Forget = g.Open, g.Forget
	}
	return mqttagent.New(cfg.MQTT, agentOpts)
}

// serve runs a built box until parent ends, a restart or relaunch is asked
// for, or a component fails, then stops it: everything else first, the
// gateway last.
func (a *Appliance) serve(parent context.Context, cfg *config.Config, p *parts) (bool, error) {
	log := p.log
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	spawn := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil && ctx.Err() == nil {
				log.Error("component stopped", "component", name, "err", err)
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}
	wd := watchdog.New(watchdog.Options{Log: log})
	// The gateway stops last: it must outlive the agent and the admin socket
	// that call into it, so it has its own context.
	gwCtx, stopGW := context.WithCancel(context.Background())
	gwDone := make(chan error, 1)
	go func() { gwDone <- p.gw.Run(gwCtx) }()
	spawn("leds", p.engine.Run)
	if p.agent.Enabled() {
		spawn("mqtt", p.agent.Run)
	}
	spawn("admin", admin.NewServer(cfg.Admin.Socket, p.disp, log).Run)
	spawn("watchdog", func(ctx context.Context) error { return wd.Run(ctx, p.reg) })
	spawn("firmware", p.fw.Run)
	spawn("link", func(ctx context.Context) error { return followMQTT(ctx, p.reg, p.engine, p.agent.Enabled()) })
	spawn("card", func(ctx context.Context) error { return p.card.Run(ctx, a.o.CardEvery, p.alarm) })
	p.engine.SetReady(true)
	if err := wd.Ready(); err != nil {
		log.Warn("systemd notify failed", "err", err)
	}
	log.Info("hl7edge started", "version", a.o.Version, "device", cfg.Device.ID, "config", cfg.Path,
		"sources", len(cfg.Sources), "destinations", len(cfg.Destinations))
	a.announce(p, spawn)

	again, runErr := a.awaitStop(parent, log, errs, gwDone)
	_ = wd.Stopping()
	cancel()
	wg.Wait()
	stopGW()
	if err := <-gwDone; err != nil && runErr == nil {
		runErr = err
	}
	log.Info("stopped")
	return again, runErr
}

// announce hands the running box to Options.Started and raises the alarms
// that waited for a box; a configuration on trial gets its health check.
func (a *Appliance) announce(p *parts, spawn func(name string, f func(context.Context) error)) {
	if a.o.Started != nil {
		a.o.Started(p.box)
	}
	a.mu.Lock()
	pending := a.pending
	notices := a.notices
	a.notices = nil
	a.mu.Unlock()
	for _, n := range notices {
		p.alarm(n[0], n[1])
	}
	if pending != nil {
		spawn("apply-check", func(ctx context.Context) error { a.checkApply(ctx, pending, p.reg, p.alarm); return nil })
	}
}

// awaitStop waits for the reason the box stops and reports whether it is a
// restart, and the error it stops with. A gateway that ended leaves its
// result in gwDone for the shutdown to read again.
func (a *Appliance) awaitStop(parent context.Context, log *slog.Logger, errs <-chan error, gwDone chan error) (again bool, runErr error) {
	select {
	case <-parent.Done():
		log.Info("stopping")
	case why := <-a.restart:
		log.Info("restarting", "why", why)
		again = true
	case why := <-a.relaunch:
		log.Info("stopping for a firmware switch; the service manager starts the launcher again", "why", why)
		runErr = ErrRelaunch
	case runErr = <-errs:
	case runErr = <-gwDone:
		if runErr == nil {
			runErr = errors.New("pipeline stopped unexpectedly")
		}
		gwDone <- runErr
	}
	return again, runErr
}

// allClearOf names the alarm that an all-clear event of kind ends ("" when
// kind is an alarm itself). The all-clear goes out on MQTT like any alarm
// event but is not kept as active: nothing is wrong any more.
func allClearOf(kind string) string {
	switch kind {
	case health.AlarmSpoolOK:
		return health.AlarmSpoolFull
	case AlarmConfigApplied:
		return AlarmConfigRolledBack
	}
	return ""
}

// followMQTT keeps the LINK LED's view of the broker connection current.
func followMQTT(ctx context.Context, reg *health.Registry, e *frontpanel.Engine, enabled bool) error {
	if !enabled {
		e.SetMQTTUp(true) // no broker configured: nothing to be down
		return nil
	}
	ch, unsub := reg.Subscribe()
	defer unsub()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		s := reg.Snapshot()
		c, ok := s.Component(health.Service, "mqtt")
		e.SetMQTTUp(ok && c.State == health.Up)
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		case <-t.C:
		}
	}
}

// checkApply waits out the grace period of a new configuration and rolls it
// back when the box is worse off than before.
func (a *Appliance) checkApply(ctx context.Context, p *pendingApply, reg *health.Registry, alarm func(kind, detail string)) {
	t := time.NewTimer(p.grace)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return
	case <-t.C:
	}
	a.mu.Lock()
	if a.pending != p {
		a.mu.Unlock()
		return
	}
	a.pending = nil
	a.mu.Unlock()
	problems := unhealthy(p.before, reg.Snapshot())
	if len(problems) == 0 {
		detail := fmt.Sprintf("configuration from command %s is healthy after %s and is kept", p.id, p.grace)
		a.settle(p.id, ApplyKept, detail)
		a.endTrial(p.id)
		alarm(AlarmConfigApplied, detail)
		return
	}
	if err := a.writeConfig(a.o.ConfigPath, p.previous); err != nil {
		detail := fmt.Sprintf("command %s: %v", p.id, err)
		a.settle(p.id, ApplyRollbackFailed, detail)
		alarm(AlarmConfigRollbackFailed, detail)
		return
	}
	detail := fmt.Sprintf("configuration from command %s rolled back: %s", p.id, strings.Join(problems, "; "))
	a.settle(p.id, ApplyRolledBack, detail)
	a.endTrial(p.id)
	alarm(AlarmConfigRolledBack, detail)
	a.requestRestart("configuration rolled back")
}

// unhealthy lists what is wrong now that was not wrong before.
func unhealthy(before, now health.Snapshot) []string {
	var out []string
	for _, s := range now.Stalled {
		out = append(out, "loop "+s+" stalled")
	}
	if now.Spool.Error != "" {
		out = append(out, "spool: "+now.Spool.Error)
	}
	bad := func(st health.State) bool { return st == health.Down || st == health.Missing || st == health.Starting }
	check := func(kind health.Kind, list []health.ComponentSnapshot) {
		for _, c := range list {
			if !bad(c.State) {
				continue
			}
			if old, ok := before.Component(kind, c.Name); ok && bad(old.State) {
				continue // it was already failing: not the new configuration's fault
			}
			out = append(out, fmt.Sprintf("%s %s is %s", kind, c.Name, c.State))
		}
	}
	check(health.Source, now.Sources)
	check(health.Destination, now.Destinations)
	check(health.Service, now.Services)
	return out
}

func (a *Appliance) requestRestart(why string) {
	select {
	case a.restart <- why:
	default:
	}
}
