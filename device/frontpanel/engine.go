package frontpanel

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hl7edge/hl7edge/board/led"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"periph.io/x/conn/v3/gpio"
)

// Ticker delivers the engine's ticks. *time.Ticker fits through RealTicker;
// tests deliver ticks by hand.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// RealTicker is a Ticker backed by time.NewTicker.
func RealTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// DefaultTick is how often the engine reads health and updates the pins.
const DefaultTick = 100 * time.Millisecond

// Options configure an Engine.
type Options struct {
	Pins led.Pins
	// Snapshot returns the current health (normally Registry.Snapshot). It
	// is called once per tick, so SYS goes dark within a tick of the
	// snapshot listing a stalled loop.
	Snapshot func() health.Snapshot
	// Tick defaults to DefaultTick.
	Tick time.Duration
	// NewTicker defaults to RealTicker.
	NewTicker func(time.Duration) Ticker
	// Beacon, when set, beats once per tick, so a stuck LED engine (a
	// Snapshot that never returns, a pin write that hangs) stops the
	// watchdog like any other stuck loop.
	Beacon *health.Loop
	Log    *slog.Logger
	// Describe, when set, hears what an LED means each time that changes
	// (Explain's Meaning), not each blink: a board that prints (board/sim)
	// can then say "FAULT: code 4, clock not synchronised" once instead of
	// every on and off. It is called from Run and must not block.
	Describe func(which led.LED, meaning string)
}

// ActQuiet is how long ACT must stay dark before Describe reports it idle,
// so a steady flow reads as one "messages moving", not one line per message.
const ActQuiet = 3 * time.Second

// Engine drives the pins from Patterns. Its setters are safe for concurrent
// use and never block; Run owns the pins.
type Engine struct {
	o Options

	activity    atomic.Bool
	ready       atomic.Bool
	mqttUp      atomic.Bool
	running     atomic.Bool
	identifyNow atomic.Bool // Run's identifying, for Inputs

	mu       sync.Mutex
	identReq time.Duration
	identNew bool

	// Owned by Run.
	identUntil  time.Time
	identifying bool
	leds        [led.NumLEDs]ledState
	meanings    [led.NumLEDs]string // last told to Describe
	lastFlash   time.Time
}

type ledState struct {
	pat     Pattern
	start   time.Time
	level   gpio.Level
	written bool // level is what the pin shows
	failing bool // the last write failed; logged once until it recovers
}

// New checks the options and makes an engine with all LEDs off.
func New(o Options) (*Engine, error) {
	if o.Snapshot == nil {
		return nil, errors.New("leds: Options.Snapshot is nil: pass the health registry's Snapshot method")
	}
	if o.Tick < 0 {
		return nil, errors.New("leds: Options.Tick is negative: leave it 0 for the default 100ms")
	}
	if o.Tick == 0 {
		o.Tick = DefaultTick
	}
	if o.NewTicker == nil {
		o.NewTicker = RealTicker
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Engine{o: o}, nil
}

// Activity flashes ACT once. Calls while a flash is showing coalesce into
// at most one more flash, so a burst of messages cannot block its callers
// or keep the LED lit.
func (e *Engine) Activity() { e.activity.Store(true) }

// SetReady says the daemon has finished starting (SYS turns from fast to
// slow blink).
func (e *Engine) SetReady(ready bool) { e.ready.Store(ready) }

// SetMQTTUp reports the MQTT session state (true when MQTT is not
// configured).
func (e *Engine) SetMQTTUp(up bool) { e.mqttUp.Store(up) }

// Inputs are the engine's inputs now (Activity is always false): with a
// health snapshot, Explain(snapshot, e.Inputs()) says what the panel shows.
func (e *Engine) Inputs() Inputs {
	return Inputs{Ready: e.ready.Load(), MQTTUp: e.mqttUp.Load(), Identify: e.identifyNow.Load()}
}

// Identify blinks all four LEDs together for d, counted from the next tick;
// d <= 0 stops identifying.
func (e *Engine) Identify(d time.Duration) {
	e.mu.Lock()
	e.identReq, e.identNew = d, true
	e.mu.Unlock()
}

// Run drives the pins until ctx ends, then turns every LED off. It returns
// an error only when the engine is already running.
func (e *Engine) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("leds: engine already running: call Run once")
	}
	defer e.running.Store(false)
	tk := e.o.NewTicker(e.o.Tick)
	defer tk.Stop()
	defer e.allOff()
	for {
		select {
		case <-ctx.Done():
			return nil
		case t := <-tk.C():
			e.step(t)
		}
	}
}

// step reads health, decides the patterns and writes the levels for tick t.
// Phases are measured from the tick a pattern started, using the ticker's
// times rather than a clock read, so tests control time completely.
func (e *Engine) step(t time.Time) {
	s := e.o.Snapshot()
	if e.o.Beacon != nil {
		e.o.Beacon.Beat()
	}
	in := Inputs{Ready: e.ready.Load(), MQTTUp: e.mqttUp.Load()}
	e.mu.Lock()
	if e.identNew {
		e.identUntil, e.identNew = t.Add(e.identReq), false
	}
	e.mu.Unlock()
	in.Identify = t.Before(e.identUntil)
	if !in.Identify && e.actIdle(t) {
		in.Activity = e.activity.Swap(false)
	}
	set := Patterns(s, in)
	// Entering or leaving identify restarts every phase so the four LEDs
	// blink in step, and normal patterns resume from their start.
	restart := in.Identify != e.identifying
	e.identifying = in.Identify
	e.identifyNow.Store(in.Identify)
	if set[led.ACT].Kind == Flash {
		e.lastFlash = t
	}
	if e.o.Describe != nil {
		e.describe(s, in, t)
	}
	for i, p := range set {
		st := &e.leds[i]
		switch {
		case restart, p.Kind == Flash:
			st.pat, st.start = p, t
		case st.pat.Kind == Flash && p.Kind == Off && t.Sub(st.start) < FlashOn+FlashGap:
			// A flash runs to the end of its gap.
		case p != st.pat:
			st.pat, st.start = p, t
		}
		e.drive(led.LED(i), st.pat.Level(t.Sub(st.start)))
	}
}

// describe tells Describe about every LED whose meaning changed.
func (e *Engine) describe(s health.Snapshot, in Inputs, t time.Time) {
	r := Explain(s, in)
	if !in.Identify {
		if !e.lastFlash.IsZero() && t.Sub(e.lastFlash) < ActQuiet {
			r[led.ACT].Shows, r[led.ACT].Meaning = "flashing", "ACT: messages moving"
		} else {
			r[led.ACT].Shows, r[led.ACT].Meaning = "off", "ACT: idle, no message in or out"
		}
	}
	for i := range r {
		if m := r[i].Shows + " — " + r[i].Meaning; m != e.meanings[i] {
			e.meanings[i] = m
			e.o.Describe(led.LED(i), m)
		}
	}
}

// actIdle is true when ACT may start a new flash.
func (e *Engine) actIdle(t time.Time) bool {
	st := &e.leds[led.ACT]
	return st.pat.Kind != Flash || t.Sub(st.start) >= FlashOn+FlashGap
}

// drive writes a level only when it changes (sysfs and GPIO writes are
// syscalls), and retries a failed write on the next tick.
func (e *Engine) drive(which led.LED, l gpio.Level) {
	pin := e.o.Pins[which]
	st := &e.leds[which]
	if pin == nil || (st.written && st.level == l) {
		return
	}
	if err := pin.Out(l); err != nil {
		st.written = false
		if !st.failing {
			st.failing = true
			e.o.Log.Warn("LED write failed; retrying every tick", "led", which.String(), "pin", pin.Name(), "err", err)
		}
		return
	}
	if st.failing {
		st.failing = false
		e.o.Log.Info("LED write works again", "led", which.String(), "pin", pin.Name())
	}
	st.level, st.written = l, true
}

func (e *Engine) allOff() {
	for i, pin := range e.o.Pins {
		if pin == nil {
			continue
		}
		if err := pin.Out(gpio.Low); err != nil {
			e.o.Log.Warn("LED could not be turned off", "led", led.LED(i).String(), "pin", pin.Name(), "err", err)
		}
		e.leds[i] = ledState{}
	}
}
