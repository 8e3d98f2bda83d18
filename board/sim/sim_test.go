package sim

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/board/led"
	"github.com/hl7edge/hl7edge/device/frontpanel"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"periph.io/x/conn/v3/gpio"
)

type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeNow) now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeNow) add(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

func TestPrintsOnlyChanges(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeNow{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	b := New(Options{Writer: &out, Now: clk.now})
	p := b.Pins()
	must(t, p[led.SYS].Out(gpio.High))
	must(t, p[led.SYS].Out(gpio.High)) // no change, no line
	clk.add(500 * time.Millisecond)
	must(t, p[led.SYS].Out(gpio.Low))
	must(t, p[led.FAULT].Out(gpio.High))
	want := "03:04:05.000 LED sys   on\n03:04:05.500 LED sys   off\n03:04:05.500 LED fault on\n"
	if out.String() != want {
		t.Fatalf("printed\n%s\nwant\n%s", out.String(), want)
	}
	if got := b.Levels(); got != [4]gpio.Level{gpio.Low, gpio.Low, gpio.Low, gpio.High} {
		t.Fatalf("Levels = %v", got)
	}
	must(t, b.Close())
	if err := p[led.ACT].Out(gpio.High); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("Out after Close: %v", err)
	}
	if err := p[led.ACT].PWM(gpio.DutyHalf, 0); err == nil {
		t.Fatal("PWM accepted")
	}
}

func TestRateLimitCountsHiddenChanges(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeNow{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	b := New(Options{Writer: &out, Now: clk.now, Every: 5 * time.Second})
	sys := b.Pins()[led.SYS]
	for i := range 12 { // 1 Hz blink for 6 s: 12 changes
		must(t, sys.Out(i%2 == 0))
		clk.add(500 * time.Millisecond)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[1], "LED sys   on (+9 changes)") {
		t.Fatalf("printed %q, want the first change and one 5 s later counting the 9 between", lines)
	}
}

func TestDebugLogWithoutWriter(t *testing.T) {
	var logs bytes.Buffer
	b := New(Options{Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	must(t, b.Pins()[led.LINK].Out(gpio.High))
	if !strings.Contains(logs.String(), "level=DEBUG msg=LED led=link state=on") {
		t.Fatalf("log: %q", logs.String())
	}
	logs.Reset()
	quiet := New(Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	must(t, quiet.Pins()[led.LINK].Out(gpio.High))
	if logs.Len() != 0 {
		t.Fatalf("default Info logger printed LED changes: %q", logs.String())
	}
}

type chanTicker chan time.Time

func (c chanTicker) C() <-chan time.Time { return c }
func (c chanTicker) Stop()               {}

// The engine on a sim board: SYS prints on/off twice per fake second.
func TestEngineOnSimBoard(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeNow{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	b := New(Options{Writer: &out, Now: clk.now})
	const n = 30
	ticks := make(chanTicker, n)
	for k := 1; k <= n; k++ {
		ticks <- clk.t.Add(time.Duration(k) * frontpanel.DefaultTick)
	}
	seen := make(chan struct{})
	count := 0
	eng, err := frontpanel.New(frontpanel.Options{
		Pins: b.Pins(),
		Snapshot: func() health.Snapshot {
			// Runs at the start of every tick in the engine goroutine.
			count++
			clk.add(frontpanel.DefaultTick)
			if count == n {
				close(seen)
			}
			return health.Snapshot{ClockSynced: true}
		},
		NewTicker: func(time.Duration) frontpanel.Ticker { return ticks },
	})
	must(t, err)
	eng.SetReady(true)
	eng.SetMQTTUp(true)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- eng.Run(ctx) }()
	<-seen
	cancel()
	must(t, <-done)
	got := out.String()
	if c := strings.Count(got, "LED sys   on"); c != 3 {
		t.Errorf("SYS lit %d times in 3 s:\n%s", c, got)
	}
	if !strings.Contains(got, "03:04:05.100 LED sys   on\n03:04:05.100 LED link  on\n03:04:05.600 LED sys   off\n03:04:06.100 LED sys   on\n") {
		t.Errorf("unexpected rhythm:\n%s", got)
	}
	if b.Levels() != [4]gpio.Level{} {
		t.Errorf("LEDs lit after Run: %v", b.Levels())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDescribedLEDPrintsMeaningsNotBlinks: once the LED logic has said what
// FAULT means, its blinks are no longer printed; the other LEDs still are.
func TestDescribedLEDPrintsMeaningsNotBlinks(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeNow{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	b := New(Options{Writer: &out, Now: clk.now})
	var d led.Describer = b
	d.Describe(led.FAULT, "4 flashes, pause — FAULT: code 4, clock not synchronised: check NTP")
	p := b.Pins()
	for range 10 {
		must(t, p[led.FAULT].Out(gpio.High))
		must(t, p[led.FAULT].Out(gpio.Low))
	}
	must(t, p[led.SYS].Out(gpio.High))
	want := "03:04:05.000 LED fault 4 flashes, pause — FAULT: code 4, clock not synchronised: check NTP\n" +
		"03:04:05.000 LED sys   on\n"
	if out.String() != want {
		t.Fatalf("printed:\n%s\nwant:\n%s", out.String(), want)
	}
	if b.Levels()[led.FAULT] != gpio.Low {
		t.Fatal("a described LED's level is still recorded")
	}
}
