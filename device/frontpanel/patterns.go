// Package leds turns the health of the box into its four front-panel LEDs,
// the only thing the nurse or technician in the room can read.
//
//	SYS    slow blink (1 Hz)   the process is alive and every internal loop beats
//	       fast blink (5 Hz)   starting: the daemon has not yet said it is ready
//	       off                 hung: a pipeline loop stopped beating (health.Snapshot.Stalled)
//	LINK   solid               every web-service destination is up (or none is configured) and MQTT is up
//	       blink               one of them is down
//	ACT    one short flash per message in or out (Engine.Activity)
//	FAULT  off                 fine
//	       N flashes, a pause  fault code N (see Fault)
//
// Identify (Engine.Identify) blinks all four together and overrides everything
// else for its duration: an operator asked which box this is.
//
// Patterns is a pure function of a health.Snapshot and a few Inputs, so every
// state can be table-tested; Engine drives real pins from it on a ticker.
//
// Fault codes read these component counters (pipeline/vocab/health, counters.go):
//
//	exceptions, refused  a destination's peer answered but refused (code 2 when the destination is Down;
//	                     a destination in state held, by a message refused for good, is code 2 too)
//	tls_errors           a TLS handshake or certificate failure (code 4 when the component is Down)
package frontpanel

import (
	"fmt"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/board/led"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"periph.io/x/conn/v3/gpio"
)

// Kind of pattern.
type Kind uint8

// Pattern kinds.
const (
	Off   Kind = iota // dark
	On                // solid
	Blink             // half of Period on, half off, repeating
	Code              // N flashes then a pause, repeating
	Flash             // one short flash (FlashOn), then at least FlashGap dark
)

// Rhythms. Periods are whole multiples of twice the engine's default 100 ms
// tick so that on and off halves come out equal.
const (
	SlowBlink     = time.Second             // SYS healthy, 1 Hz
	FastBlink     = 200 * time.Millisecond  // SYS starting, 5 Hz
	LinkBlink     = 600 * time.Millisecond  // LINK with one side down
	IdentifyBlink = 400 * time.Millisecond  // all four while identifying
	FlashOn       = 100 * time.Millisecond  // ACT flash
	FlashGap      = 100 * time.Millisecond  // dark time after a flash, so a busy line flickers rather than glows
	CodeOn        = 200 * time.Millisecond  // each flash of a fault code
	CodeOff       = 300 * time.Millisecond  // between flashes of a code
	CodePause     = 1500 * time.Millisecond // after the last flash, long enough to tell codes apart
)

// Pattern is what one LED shows.
type Pattern struct {
	Kind   Kind
	Period time.Duration // Blink: one on+off cycle
	N      int           // Code: flashes per cycle
}

func (p Pattern) String() string {
	switch p.Kind {
	case Off:
		return "off"
	case On:
		return "on"
	case Blink:
		return fmt.Sprintf("blink(%s)", p.Period)
	case Code:
		return fmt.Sprintf("code(%d)", p.N)
	case Flash:
		return "flash"
	}
	return fmt.Sprintf("kind(%d)", p.Kind)
}

// CodeCycle is how long one repetition of fault code n lasts.
func CodeCycle(n int) time.Duration {
	return time.Duration(n)*(CodeOn+CodeOff) + CodePause
}

// Level is the pin level elapsed after the pattern started.
func (p Pattern) Level(elapsed time.Duration) gpio.Level {
	if elapsed < 0 {
		elapsed = 0
	}
	switch p.Kind {
	case On:
		return gpio.High
	case Blink:
		if p.Period <= 0 {
			return gpio.High
		}
		return elapsed%p.Period < p.Period/2
	case Code:
		if p.N <= 0 {
			return gpio.Low
		}
		t := elapsed % CodeCycle(p.N)
		if t >= time.Duration(p.N)*(CodeOn+CodeOff) {
			return gpio.Low // the pause
		}
		return t%(CodeOn+CodeOff) < CodeOn
	case Flash:
		return elapsed < FlashOn
	}
	return gpio.Low
}

// Set holds one pattern per LED, indexed by LED.
type Set [led.NumLEDs]Pattern

func (s Set) String() string {
	var b strings.Builder
	for i, p := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", led.LED(i), p)
	}
	return b.String()
}

// Inputs are what the LEDs show that the health snapshot does not hold.
type Inputs struct {
	// Ready is true once the daemon has finished starting (when it tells
	// systemd READY=1). Until then SYS blinks fast. It is an input rather
	// than derived from components in health.Starting, because a component
	// may wait for its peer for a long time, and that is LINK's story.
	Ready bool
	// MQTTUp is true while the MQTT session is connected. Set it true when
	// MQTT is not configured, so LINK reflects the upstream alone.
	MQTTUp bool
	// Identify blinks all four LEDs together.
	Identify bool
	// Activity starts one ACT flash.
	Activity bool
}

// Fault is a fault code shown on the FAULT LED as that many flashes.
type Fault int

// Fault codes, numbered as docs/design.md promises users. FaultOf evaluates them
// in FaultPriority order, not numeric order.
const (
	NoFault               Fault = 0
	FaultSpoolFull        Fault = 1 // spool nearly full: at least NearlyFullPercent of max_bytes, or full
	FaultUpstreamRefusing Fault = 2 // a destination's peer refuses (EXCEPTION, AR/AE) and it is Down, or it is held by a refused message
	FaultDeviceMissing    Fault = 3 // a serial device of a source or destination is missing
	FaultClockTLS         Fault = 4 // clock not synchronised, or a TLS failure
	FaultStorage          Fault = 5 // the spool reports a storage error
)

// NearlyFullPercent of spool.max_bytes raises FaultSpoolFull, before intake
// starts answering AE, so someone can act while messages still flow.
const NearlyFullPercent = 90

// FaultPriority is the order conditions are evaluated in: the first that
// holds is shown, because one LED can show one code. Most severe first:
//
//  5. storage error: the spool cannot keep messages, so promise 1 is at risk
//     for everything;
//  1. spool nearly full: intake is about to refuse every sender;
//  3. serial device missing: a sender's messages are not even reaching us,
//     and serial peers often do not buffer;
//  2. upstream refusing: messages are safe in the spool and queue up, but
//     someone must fix the receiver or the credentials;
//  4. clock or TLS: often transient at boot (clock not yet synchronised), and
//     a TLS failure that stops delivery also shows on LINK.
func FaultPriority() []Fault {
	return []Fault{FaultStorage, FaultSpoolFull, FaultDeviceMissing, FaultUpstreamRefusing, FaultClockTLS}
}

func (f Fault) String() string {
	switch f {
	case NoFault:
		return "none"
	case FaultSpoolFull:
		return "spool nearly full"
	case FaultUpstreamRefusing:
		return "upstream refusing"
	case FaultDeviceMissing:
		return "serial device missing"
	case FaultClockTLS:
		return "clock or TLS"
	case FaultStorage:
		return "storage error"
	}
	return fmt.Sprintf("fault(%d)", int(f))
}

// FaultOf is the fault code the snapshot shows, NoFault when fine.
func FaultOf(s health.Snapshot) Fault {
	for _, f := range FaultPriority() {
		if faultHolds(f, s) {
			return f
		}
	}
	return NoFault
}

func faultHolds(f Fault, s health.Snapshot) bool {
	switch f {
	case FaultStorage:
		return s.Spool.Error != ""
	case FaultSpoolFull:
		// Integer arithmetic: bytes*100 >= max*90 without float rounding;
		// max_bytes is capped far below where *100 overflows.
		return s.Spool.Full || (s.Spool.MaxBytes > 0 && s.Spool.Bytes*100 >= s.Spool.MaxBytes*NearlyFullPercent)
	case FaultDeviceMissing:
		return anyComponent(func(c health.ComponentSnapshot) bool { return c.State == health.Missing }, s.Sources, s.Destinations)
	case FaultUpstreamRefusing:
		return anyComponent(refusing, s.Destinations)
	case FaultClockTLS:
		return !s.ClockSynced || anyComponent(func(c health.ComponentSnapshot) bool {
			return c.State == health.Down && c.Counters[health.CounterTLSErrors] > 0
		}, s.Sources, s.Destinations, s.Services)
	}
	return false
}

// refusing says whether a destination's receiver answers but says no: it
// holds a message it refused for good, or it keeps refusing (AE, EXCEPTION).
func refusing(c health.ComponentSnapshot) bool {
	return c.State == health.Held ||
		c.State == health.Down && (c.Counters[health.CounterExceptions] > 0 || c.Counters[health.CounterRefused] > 0)
}

func anyComponent(f func(health.ComponentSnapshot) bool, lists ...[]health.ComponentSnapshot) bool {
	for _, l := range lists {
		for _, c := range l {
			if f(c) {
				return true
			}
		}
	}
	return false
}

// Patterns derives what every LED shows from the box's health and inputs.
func Patterns(s health.Snapshot, in Inputs) Set {
	if in.Identify {
		b := Pattern{Kind: Blink, Period: IdentifyBlink}
		return Set{b, b, b, b}
	}
	var set Set
	switch {
	case len(s.Stalled) > 0:
		set[led.SYS] = Pattern{Kind: Off}
	case !in.Ready:
		set[led.SYS] = Pattern{Kind: Blink, Period: FastBlink}
	default:
		set[led.SYS] = Pattern{Kind: Blink, Period: SlowBlink}
	}
	if upstreamUp(s) && in.MQTTUp {
		set[led.LINK] = Pattern{Kind: On}
	} else {
		set[led.LINK] = Pattern{Kind: Blink, Period: LinkBlink}
	}
	if in.Activity {
		set[led.ACT] = Pattern{Kind: Flash}
	}
	if f := FaultOf(s); f != NoFault {
		set[led.FAULT] = Pattern{Kind: Code, N: int(f)}
	}
	return set
}

// upstreamUp is true when every upstream destination (a type that says
// so, such as the web service) is up. A paused one
// counts as up: an operator chose to hold it, nothing is broken.
func upstreamUp(s health.Snapshot) bool {
	return !anyComponent(func(c health.ComponentSnapshot) bool {
		return c.Upstream && c.State != health.Up && c.State != health.Paused
	}, s.Destinations)
}
