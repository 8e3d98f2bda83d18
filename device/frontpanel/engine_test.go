package frontpanel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/board/led"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"periph.io/x/conn/v3/gpio"
)

// change is one level a pin was driven to, stamped with the fake time of
// the tick that drove it.
type change struct {
	at    time.Time
	level gpio.Level
}

// fakePin records every Out call. Embedding gpio.INVALID supplies the
// rest of gpio.PinOut.
type fakePin struct {
	gpio.PinIO
	name string
	h    *harness
	fail bool // Out fails while set

	mu      sync.Mutex
	changes []change
	outs    int
}

func (p *fakePin) Name() string   { return p.name }
func (p *fakePin) String() string { return p.name }

func (p *fakePin) Out(l gpio.Level) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.outs++
	if p.fail {
		return errors.New("pin unplugged")
	}
	p.changes = append(p.changes, change{p.h.now(), l})
	return nil
}

func (p *fakePin) history() []change {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]change(nil), p.changes...)
}

// harness runs an Engine over a fixed number of fake ticks. Ticks are all
// queued at once; the Snapshot hook, which the engine calls first thing in
// every tick, advances fake time and runs the test's per-tick actions, so
// everything happens in tick order without sleeping.
type harness struct {
	t0   time.Time
	tick time.Duration
	pins [led.NumLEDs]*fakePin
	eng  *Engine

	mu      sync.Mutex
	current time.Time

	onTick func(k int)            // in the engine goroutine, before health is read
	health func() health.Snapshot // defaults to a healthy box
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	h := &harness{t0: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), tick: DefaultTick}
	if opts.Tick != 0 {
		h.tick = opts.Tick
	}
	h.current = h.t0
	for i := range h.pins {
		h.pins[i] = &fakePin{PinIO: gpio.INVALID, name: led.LED(i).String(), h: h}
		opts.Pins[i] = h.pins[i]
	}
	opts.Snapshot = h.snapshot
	eng, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	return h
}

func (h *harness) now() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current
}

func (h *harness) at(k int) time.Time { return h.t0.Add(time.Duration(k) * h.tick) }

func (h *harness) snapshot() health.Snapshot {
	h.mu.Lock()
	h.current = h.current.Add(h.tick)
	k := int(h.current.Sub(h.t0) / h.tick)
	h.mu.Unlock()
	if h.onTick != nil {
		h.onTick(k)
	}
	if h.health != nil {
		return h.health()
	}
	return health.Snapshot{ClockSynced: true}
}

type chanTicker struct{ c chan time.Time }

func (c chanTicker) C() <-chan time.Time { return c.c }
func (c chanTicker) Stop()               {}

// run drives n ticks through the engine, stops it and waits for Run to end.
func (h *harness) run(t *testing.T, n int) {
	t.Helper()
	ch := make(chan time.Time, n)
	for k := 1; k <= n; k++ {
		ch <- h.at(k)
	}
	h.eng.o.NewTicker = func(d time.Duration) Ticker {
		if d != h.tick {
			t.Errorf("ticker asked for %v, want %v", d, h.tick)
		}
		return chanTicker{ch}
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.eng.Run(ctx) }()
	deadline := time.After(20 * time.Second)
	for h.now().Before(h.at(n)) || len(ch) > 0 {
		select {
		case err := <-done:
			t.Fatalf("Run ended early: %v", err)
		case <-deadline:
			t.Fatalf("engine stuck at %v of %d ticks", h.now().Sub(h.t0)/h.tick, n)
		case <-time.After(time.Millisecond):
		}
	}
	// The last tick's snapshot has been taken; once Run returns, its pin
	// writes and the exit's all-off are recorded too.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// between returns the changes of pin in [from, to), after dropping the
// exit's all-off (recorded at the last tick's time, after its own write).
func (h *harness) between(which led.LED, from, to time.Time) []change {
	var out []change
	for _, c := range h.pins[which].history() {
		if !c.at.Before(from) && c.at.Before(to) {
			out = append(out, c)
		}
	}
	return out
}

func rises(cs []change) []time.Time {
	var out []time.Time
	for _, c := range cs {
		if c.level {
			out = append(out, c.at)
		}
	}
	return out
}

func levelAt(cs []change, t time.Time) gpio.Level {
	l := gpio.Low
	for _, c := range cs {
		if c.at.After(t) {
			break
		}
		l = c.level
	}
	return l
}

func TestSysBlinksSlowlyUntilALoopStalls(t *testing.T) {
	var (
		reg  *health.Registry
		loop *health.Loop
	)
	h := newHarness(t, Options{})
	reg = health.NewRegistry("ward3-gw", "test", h.now)
	reg.SetClockProbe(func() bool { return true })
	loop = reg.Loop("deliver/ehr")
	h.eng.o.Beacon = reg.Loop("leds")
	h.eng.SetReady(true)
	h.eng.SetMQTTUp(true)
	const beatUntil = 300 // 30 s of beating, then the loop hangs
	h.onTick = func(k int) {
		if k <= beatUntil {
			loop.Beat()
		}
	}
	h.health = reg.Snapshot
	h.run(t, beatUntil+int(health.StallAge/h.tick)+500)

	// Stalled once more than health.StallAge has passed since the last beat.
	stallTick := beatUntil + int(health.StallAge/h.tick) + 1
	sys := h.pins[led.SYS].history()
	healthyPart := h.between(led.SYS, h.at(1), h.at(stallTick))
	r := rises(healthyPart)
	if len(r) != int(h.at(stallTick).Sub(h.at(1))/SlowBlink) {
		t.Fatalf("SYS lit %d times in the healthy %v, want one per %v", len(r), h.at(stallTick).Sub(h.at(1)), SlowBlink)
	}
	for i := 1; i < len(r); i++ {
		if d := r[i].Sub(r[i-1]); d != SlowBlink {
			t.Fatalf("SYS pulses %v apart at %v, want %v", d, r[i], SlowBlink)
		}
	}
	for _, at := range r {
		if !levelAt(sys, at.Add(SlowBlink/2-h.tick)) || levelAt(sys, at.Add(SlowBlink/2)) {
			t.Fatalf("SYS pulse at %v is not %v long", at, SlowBlink/2)
		}
	}
	// From the stall on, SYS is dark and never changes again.
	after := h.between(led.SYS, h.at(stallTick), h.at(1000).Add(time.Nanosecond))
	if levelAt(sys, h.at(stallTick)) {
		t.Fatalf("SYS still lit at the stall (%v)", h.at(stallTick).Sub(h.t0))
	}
	for _, c := range after {
		if c.level {
			t.Fatalf("SYS lit at %v after the loop stalled at %v", c.at.Sub(h.t0), h.at(stallTick).Sub(h.t0))
		}
	}
	if len(after) > 2 { // the one turn-off (if it was lit) and the exit's all-off
		t.Fatalf("SYS changed %d times after the stall, want it to stop", len(after))
	}
	// The stall before it: still blinking one tick before.
	if len(rises(h.between(led.SYS, h.at(stallTick).Add(-2*SlowBlink), h.at(stallTick)))) == 0 {
		t.Fatal("SYS stopped blinking before the loop stalled")
	}
	// LINK solid (no upstream, MQTT up), FAULT dark, the engine's own beacon alive.
	if link := h.pins[led.LINK].history(); len(link) != 2 || !link[0].level || link[1].level {
		t.Errorf("LINK = %v, want on from the first tick, off at exit", link)
	}
	if fault := h.pins[led.FAULT].history(); len(fault) != 2 || fault[0].level {
		t.Errorf("FAULT = %v, want off", fault)
	}
	if got := reg.Stalled(health.StallAge); len(got) != 1 || got[0] != "deliver/ehr" {
		t.Errorf("stalled loops %v, want only deliver/ehr (the engine beats its own)", got)
	}
	for i, p := range h.pins {
		hist := p.history()
		if last := hist[len(hist)-1]; last.level {
			t.Errorf("%v left lit after Run", led.LED(i))
		}
	}
}

func TestSysBlinksFastUntilReady(t *testing.T) {
	h := newHarness(t, Options{})
	h.onTick = func(k int) {
		if k == 20 {
			h.eng.SetReady(true)
		}
	}
	h.run(t, 60)
	r := rises(h.between(led.SYS, h.at(1), h.at(20)))
	for i := 1; i < len(r); i++ {
		if d := r[i].Sub(r[i-1]); d != FastBlink {
			t.Fatalf("starting SYS pulses %v apart, want %v", d, FastBlink)
		}
	}
	if len(r) < 9 {
		t.Fatalf("starting SYS lit %d times in 2s, want 10", len(r))
	}
	sys := h.pins[led.SYS].history()
	for k := 20; k < 60; k++ {
		if got, want := levelAt(sys, h.at(k)), slow.Level(h.at(k).Sub(h.at(20))); got != want {
			t.Fatalf("ready SYS at tick %d = %v, want %v (slow blink from tick 20)", k, got, want)
		}
	}
}

func faultSnapshot(n int) health.Snapshot {
	s := health.Snapshot{ClockSynced: true, Spool: health.SpoolSnapshot{MaxBytes: 100}}
	switch Fault(n) {
	case FaultSpoolFull:
		s.Spool.Bytes = 95
	case FaultUpstreamRefusing:
		s.Destinations = []health.ComponentSnapshot{{Name: "ehr", Type: "webservice", Upstream: true, State: health.Down, Counters: map[string]uint64{"exceptions": 1}}}
	case FaultDeviceMissing:
		s.Sources = []health.ComponentSnapshot{{Name: "analyzer", Type: "serial", State: health.Missing}}
	case FaultClockTLS:
		s.ClockSynced = false
	case FaultStorage:
		s.Spool.Error = "disk I/O error"
	}
	return s
}

func TestFaultFlashesCodeThenPauses(t *testing.T) {
	for n := 1; n <= 5; n++ {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			h := newHarness(t, Options{})
			h.eng.SetReady(true)
			h.health = func() health.Snapshot { return faultSnapshot(n) }
			cycles := 3
			ticks := cycles * int(CodeCycle(n)/h.tick)
			h.run(t, ticks)
			cs := h.between(led.FAULT, h.at(1), h.at(ticks).Add(time.Nanosecond))
			// Split the pulses into groups separated by the long pause.
			var groups [][]time.Time
			var lastFall time.Time
			for _, c := range cs {
				if c.level {
					if len(groups) == 0 || c.at.Sub(lastFall) >= CodePause {
						groups = append(groups, nil)
					} else if gap := c.at.Sub(lastFall); gap != CodeOff {
						t.Fatalf("gap between flashes %v, want %v", gap, CodeOff)
					}
					groups[len(groups)-1] = append(groups[len(groups)-1], c.at)
				} else {
					if len(groups) > 0 && c.at.Sub(groups[len(groups)-1][len(groups[len(groups)-1])-1]) != CodeOn && c.at != h.at(ticks) {
						t.Fatalf("flash at %v lasted %v, want %v", groups[len(groups)-1], c.at.Sub(groups[len(groups)-1][len(groups[len(groups)-1])-1]), CodeOn)
					}
					lastFall = c.at
				}
			}
			if len(groups) != cycles {
				t.Fatalf("%d groups of flashes in %d cycles: %v", len(groups), cycles, groups)
			}
			for i, g := range groups {
				if len(g) != n {
					t.Errorf("group %d has %d flashes, want exactly %d", i, len(g), n)
				}
				if i > 0 && g[0].Sub(groups[i-1][0]) != CodeCycle(n) {
					t.Errorf("groups %v apart, want %v", g[0].Sub(groups[i-1][0]), CodeCycle(n))
				}
			}
		})
	}
}

func TestIdentifyBlinksAllFourTogether(t *testing.T) {
	h := newHarness(t, Options{})
	h.eng.SetReady(true)
	h.eng.SetMQTTUp(true)
	h.health = func() health.Snapshot { return faultSnapshot(int(FaultDeviceMissing)) }
	const start, d = 25, 3 * time.Second
	h.onTick = func(k int) {
		if k == start {
			h.eng.Identify(d)
		}
	}
	h.run(t, 80)
	end := h.at(start).Add(d)
	// Every LED shows the identify rhythm, in step, from the tick it was asked.
	for which := range led.LED(led.NumLEDs) {
		hist := h.pins[which].history()
		for k := start; h.at(k).Before(end); k++ {
			if got, want := levelAt(hist, h.at(k)), ident.Level(h.at(k).Sub(h.at(start))); got != want {
				t.Fatalf("%v at tick %d = %v while identifying, want %v", which, k, got, want)
			}
		}
	}
	// Afterwards the normal patterns are back: LINK solid, FAULT code 3.
	if !levelAt(h.pins[led.LINK].history(), h.at(79)) {
		t.Error("LINK not solid after identify")
	}
	fault := h.pins[led.FAULT].history()
	for k := start + int(d/h.tick); k < 80; k++ {
		if got, want := levelAt(fault, h.at(k)), code(3).Level(h.at(k).Sub(end)); got != want {
			t.Fatalf("FAULT at tick %d = %v after identify, want %v (code 3 from its start)", k, got, want)
		}
	}
	if got := len(rises(h.between(led.ACT, end, h.at(80)))); got != 0 {
		t.Errorf("ACT flashed %d times after identify without activity", got)
	}
}

func TestIdentifyCancel(t *testing.T) {
	h := newHarness(t, Options{})
	h.onTick = func(k int) {
		switch k {
		case 10:
			h.eng.Identify(time.Hour)
		case 20:
			h.eng.Identify(0)
		}
	}
	h.run(t, 40)
	if got := len(rises(h.between(led.ACT, h.at(20), h.at(40)))); got != 0 {
		t.Fatalf("ACT blinked %d times after identify was cancelled", got)
	}
	if got := len(rises(h.between(led.ACT, h.at(10), h.at(20)))); got == 0 {
		t.Fatal("ACT did not blink while identifying")
	}
}

func TestActivityFlashesAndCoalesces(t *testing.T) {
	h := newHarness(t, Options{})
	h.onTick = func(k int) {
		switch {
		case k == 5:
			h.eng.Activity()
		case k == 20:
			for range 100 {
				h.eng.Activity()
			}
		case k >= 40 && k < 60:
			h.eng.Activity()
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { // concurrent callers never block
		for range 1000 {
			h.eng.Activity()
		}
	})
	wg.Wait()
	h.run(t, 80)
	act := h.pins[led.ACT].history()
	if got := rises(h.between(led.ACT, h.at(5), h.at(20))); len(got) != 1 || !got[0].Equal(h.at(5)) {
		t.Fatalf("one Activity: flashes at %v, want one at tick 5", got)
	}
	if levelAt(act, h.at(6)) {
		t.Fatalf("flash longer than %v", FlashOn)
	}
	if got := rises(h.between(led.ACT, h.at(20), h.at(40))); len(got) != 1 {
		t.Fatalf("100 Activity calls in one tick: %d flashes, want 1", len(got))
	}
	busy := rises(h.between(led.ACT, h.at(40), h.at(60)))
	if len(busy) != 10 {
		t.Fatalf("activity every tick for 2s: %d flashes, want 10 (flash, gap, flash...)", len(busy))
	}
	for k := 40; k < 62; k++ {
		if levelAt(act, h.at(k)) && levelAt(act, h.at(k+1)) {
			t.Fatalf("ACT lit through ticks %d and %d: a busy line must flicker", k, k+1)
		}
	}
	// The call in tick 59 fell in a gap: it shows as one more flash, then nothing.
	if got := rises(h.between(led.ACT, h.at(60), h.at(81))); len(got) != 1 || !got[0].Equal(h.at(60)) {
		t.Fatalf("flashes %v after activity ended, want the one pending at tick 60", got)
	}
}

// With a tick finer than a flash, the flash still lasts FlashOn.
func TestFlashLastsFlashOnWithFineTicks(t *testing.T) {
	h := newHarness(t, Options{Tick: 25 * time.Millisecond})
	h.onTick = func(k int) {
		if k == 8 {
			h.eng.Activity()
		}
	}
	h.run(t, 40)
	act := h.between(led.ACT, h.at(1), h.at(40))
	if len(act) != 3 || act[1].level != gpio.High || !act[1].at.Equal(h.at(8)) || act[2].at.Sub(act[1].at) != FlashOn {
		t.Fatalf("ACT = %v, want off, then on at tick 8 for %v", act, FlashOn)
	}
}

func TestFailingPinIsLoggedOnceAndRetried(t *testing.T) {
	var logs bytes.Buffer
	h := newHarness(t, Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	h.eng.SetMQTTUp(true)
	h.pins[led.LINK].fail = true
	h.onTick = func(k int) {
		if k == 10 {
			h.pins[led.LINK].mu.Lock()
			h.pins[led.LINK].fail = false
			h.pins[led.LINK].mu.Unlock()
		}
	}
	h.run(t, 20)
	if n := strings.Count(logs.String(), "LED write failed"); n != 1 {
		t.Fatalf("logged %d failures, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "LED write works again") {
		t.Fatalf("recovery not logged:\n%s", logs.String())
	}
	if got := h.pins[led.LINK].history(); len(got) == 0 || got[0].level != gpio.High || !got[0].at.Equal(h.at(10)) {
		t.Fatalf("LINK = %v, want lit at tick 10 once the pin works", got)
	}
	// SYS kept blinking meanwhile.
	if len(rises(h.between(led.SYS, h.at(1), h.at(10)))) == 0 {
		t.Fatal("a failing LINK pin stopped SYS")
	}
}

func TestRunOnceAndNilPins(t *testing.T) {
	if _, err := New(Options{}); err == nil || !strings.Contains(err.Error(), "Snapshot") {
		t.Fatalf("New without Snapshot: %v", err)
	}
	blocked := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	eng, err := New(Options{
		Pins: led.Pins{nil, nil, nil, nil},
		Snapshot: func() health.Snapshot {
			once.Do(func() { close(blocked) })
			<-release
			return health.Snapshot{}
		},
		NewTicker: func(time.Duration) Ticker {
			c := make(chan time.Time, 1)
			c <- time.Unix(1, 0)
			return chanTicker{c}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()
	<-blocked
	if err := eng.Run(ctx); err == nil {
		t.Fatal("second concurrent Run accepted")
	}
	close(release)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}
