// Package sim is the off-hardware board: its four LEDs are lines of text, so
// the demo, tests and a developer's laptop show what the front panel would.
package sim

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hl7edge/hl7edge/board/led"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/physic"
)

// Options configure a simulated board.
type Options struct {
	// Writer, when set, gets one line per shown change:
	// "15:04:05.000 LED sys on". When nil, changes go to Log at Debug
	// level, so a running daemon stays quiet unless asked.
	Writer io.Writer
	Log    *slog.Logger
	// Every rate-limits each LED to one shown change per Every; the changes
	// in between are counted in the next line ("(+9 changes)"). 0 shows all.
	Every time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
}

// Board is a simulated front panel.
type Board struct {
	o    Options
	pins led.Pins

	mu         sync.Mutex
	levels     [led.NumLEDs]gpio.Level
	shown      [led.NumLEDs]time.Time // when a change of this LED was last shown
	suppressed [led.NumLEDs]int
	described  [led.NumLEDs]bool // raw changes of this LED are no longer shown
	closed     bool
}

// New makes a simulated board with every LED off.
func New(o Options) *Board {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	b := &Board{o: o}
	for i := range b.pins {
		b.pins[i] = &pin{b: b, led: led.LED(i)}
	}
	return b
}

// Pins returns the four simulated LEDs.
func (b *Board) Pins() led.Pins { return b.pins }

// Levels returns what the panel shows now.
func (b *Board) Levels() [led.NumLEDs]gpio.Level {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.levels
}

// Close stops the panel; later writes fail.
func (b *Board) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

func (b *Board) set(led led.LED, l gpio.Level) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("sim LED %s: board closed", led)
	}
	if b.levels[led] == l {
		return nil
	}
	b.levels[led] = l
	if b.described[led] {
		return nil
	}
	now := b.o.Now()
	if b.o.Every > 0 && !b.shown[led].IsZero() && now.Sub(b.shown[led]) < b.o.Every {
		b.suppressed[led]++
		return nil
	}
	b.shown[led] = now
	more := b.suppressed[led]
	b.suppressed[led] = 0
	state := "off"
	if l {
		state = "on"
	}
	if b.o.Writer == nil {
		b.o.Log.Debug("LED", "led", led.String(), "state", state, "suppressed_changes", more)
		return nil
	}
	line := fmt.Sprintf("%s LED %-5s %s", now.Format("15:04:05.000"), led, state)
	if more > 0 {
		line += fmt.Sprintf(" (+%d changes)", more)
	}
	// A failing terminal must not stop the engine; the level is recorded.
	_, _ = io.WriteString(b.o.Writer, line+"\n")
	return nil
}

// Describe shows what an LED means now (led.Describer): one line per change
// of meaning, "15:04:05.000 LED fault 4 flashes, pause — FAULT: code 4, ...".
// From then on that LED's blinks are not shown, only its meanings.
func (b *Board) Describe(which led.LED, text string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || which < 0 || which >= led.NumLEDs {
		return
	}
	b.described[which] = true
	if b.o.Writer == nil {
		b.o.Log.Debug("LED", "led", which.String(), "meaning", text)
		return
	}
	_, _ = fmt.Fprintf(b.o.Writer, "%s LED %-5s %s\n", b.o.Now().Format("15:04:05.000"), which, text)
}

// pin is one simulated LED as a gpio.PinOut.
type pin struct {
	b   *Board
	led led.LED
}

func (p *pin) String() string                        { return "sim/" + p.led.String() }
func (p *pin) Name() string                          { return p.String() }
func (p *pin) Number() int                           { return int(p.led) }
func (p *pin) Function() string                      { return "Out" }
func (p *pin) Halt() error                           { return nil }
func (p *pin) Out(l gpio.Level) error                { return p.b.set(p.led, l) }
func (p *pin) PWM(gpio.Duty, physic.Frequency) error { return errPWM }

var errPWM = errors.New("sim LED: PWM not supported: LEDs are on or off")
