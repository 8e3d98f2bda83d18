// Package rpi drives LEDs wired to GPIO header pins of a Raspberry Pi (or
// any Linux board) through the kernel's GPIO character device
// (/dev/gpiochipN), with periph.io.
//
// Only the character-device driver, never /dev/mem. periph's usual entry,
// host.Init from periph.io/x/host/v3, links the bcm283x, allwinner and
// other SoC drivers on arm64; bcm283x memory-maps the GPIO registers
// through /dev/gpiomem and, when that is missing and the process runs as
// root, through /dev/mem, where one wrong write can hang the board. This
// package therefore imports periph.io/x/host/v3/gpioioctl alone and calls
// driverreg.Init, which initialises exactly the drivers linked into the
// binary. Open refuses to run when any other periph host driver has loaded
// (someone imported periph.io/x/host/v3 elsewhere), and it looks lines up
// on gpioioctl's chips directly, so even then no memory-mapped pin is used.
// The kernel also releases the lines when the process dies, so a crash never
// leaves a line claimed.
package rpi

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/hl7edge/hl7edge/board/led"
	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/host/v3/gpioioctl"
)

// DriverName is the periph driver Open relies on, the only one it allows.
const DriverName = "ioctl-gpio"

// DefaultPins are the header lines DESIGN.md suggests for SYS, LINK, ACT and
// FAULT.
func DefaultPins() [led.NumLEDs]string {
	return [led.NumLEDs]string{"GPIO17", "GPIO27", "GPIO22", "GPIO23"}
}

// Line is a claimed GPIO line; *gpioioctl.GPIOLine is one.
type Line interface {
	gpio.PinOut
	Close()
}

// Finder looks a line up by its kernel name (as gpioinfo prints it) and
// says where it looked, for error messages.
type Finder interface {
	Find(name string) (Line, bool)
	Where() string
}

// Board holds the claimed lines.
type Board struct {
	pins  led.Pins
	lines []Line
}

// Open claims the GPIO lines named in names (indexed by led.LED; an empty
// name leaves that logical LED unwired) as outputs, driven low.
func Open(names [led.NumLEDs]string, log *slog.Logger) (*Board, error) {
	f, err := chardev()
	if err != nil {
		return nil, err
	}
	return OpenWith(f, names, log)
}

// chardev initialises periph with the character-device driver only.
func chardev() (Finder, error) {
	state, err := driverreg.Init()
	if err != nil {
		return nil, fmt.Errorf("board rpi: initialise periph GPIO drivers: %w", err)
	}
	if other := otherDrivers(state); len(other) > 0 {
		return nil, fmt.Errorf("board rpi: periph drivers %s are linked into this binary and may map GPIO registers through /dev/mem; "+
			"hl7edge must link only periph.io/x/host/v3/gpioioctl (do not import periph.io/x/host/v3)", strings.Join(other, ", "))
	}
	if len(gpioioctl.Chips) == 0 {
		why := "no /dev/gpiochip* device"
		for _, f := range slices.Concat(state.Skipped, state.Failed) {
			if f.D.String() == DriverName && f.Err != nil {
				why = f.Err.Error()
			}
		}
		return nil, fmt.Errorf("board rpi: no usable GPIO character device (%s): this is not a Raspberry Pi, or /dev/gpiochip* is not readable by hl7edge (add its user to the gpio group); set device.board: sim off hardware", why)
	}
	return chips(gpioioctl.Chips), nil
}

// otherDrivers lists loaded periph drivers other than the character device.
func otherDrivers(state *driverreg.State) []string {
	var out []string
	for _, d := range state.Loaded {
		if d.String() != DriverName {
			out = append(out, d.String())
		}
	}
	return out
}

type chips []*gpioioctl.GPIOChip

func (c chips) Find(name string) (Line, bool) {
	for _, chip := range c {
		if l := chip.ByName(name); l != nil {
			return l, true
		}
	}
	return nil, false
}

func (c chips) Where() string {
	var s []string
	for _, chip := range c {
		s = append(s, fmt.Sprintf("%s (%s)", chip.Name(), chip.Label()))
	}
	return strings.Join(s, ", ")
}

// OpenWith claims lines through f. Open uses the kernel's chips; tests pass
// their own lines.
func OpenWith(f Finder, names [led.NumLEDs]string, log *slog.Logger) (*Board, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Board{}
	var claimed []string
	for i, raw := range names {
		if raw == "" {
			continue
		}
		key := "leds." + led.LED(i).String()
		name := LineName(raw)
		if j := slices.Index(claimed, name); j >= 0 {
			_ = b.Close()
			return nil, fmt.Errorf("GPIO line %q is mapped to two LEDs (%s too): give each LED its own line", name, key)
		}
		l, ok := f.Find(name)
		if !ok {
			_ = b.Close()
			return nil, fmt.Errorf("GPIO line %q (%s) not found on %s: set %s to a line name that gpioinfo lists, such as GPIO17", name, key, f.Where(), key)
		}
		// The first Out requests the line from the kernel as an output.
		if err := l.Out(gpio.Low); err != nil {
			_ = b.Close()
			return nil, fmt.Errorf("claim GPIO line %q (%s) as an output: %w: is another program or a device-tree overlay using it? gpioinfo shows its consumer", name, key, err)
		}
		claimed = append(claimed, name)
		b.lines = append(b.lines, l)
		b.pins[i] = l
		log.Info("GPIO line claimed", "led", led.LED(i).String(), "line", name)
	}
	if len(b.lines) == 0 {
		return nil, errors.New("board rpi: no LED mapped: set leds.sys, leds.link, leds.act and leds.fault to GPIO line names such as GPIO17")
	}
	return b, nil
}

// Pins returns the claimed lines; unmapped LEDs are nil.
func (b *Board) Pins() led.Pins { return b.pins }

// Close drives every line low and releases it.
func (b *Board) Close() error {
	var errs []error
	for _, l := range b.lines {
		if err := l.Out(gpio.Low); err != nil {
			errs = append(errs, fmt.Errorf("turn off GPIO line %q: %w", l.Name(), err))
		}
		l.Close()
	}
	b.lines = nil
	b.pins = led.Pins{}
	return errors.Join(errs...)
}

// LineName turns a configured pin into a kernel line name: "17", "gpio17"
// and "GPIO17" all mean GPIO17 (the Raspberry Pi's line names are BCM
// numbers). Anything else is a line name already and is kept as written.
func LineName(s string) string {
	s = strings.TrimSpace(s)
	digits := s
	if len(s) > 4 && strings.EqualFold(s[:4], "gpio") {
		digits = s[4:]
	}
	if n, err := strconv.ParseUint(digits, 10, 16); err == nil && digits[0] >= '0' && digits[0] <= '9' {
		return "GPIO" + strconv.FormatUint(n, 10)
	}
	return s
}
