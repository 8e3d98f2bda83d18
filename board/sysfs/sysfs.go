// Package sysfs drives LEDs the kernel already knows (on a Raspberry Pi the
// green ACT and red PWR LEDs, on other boards whatever the device tree
// declares) through /sys/class/leds.
//
// For each mapped LED it first writes "none" to its trigger, so the kernel
// stops driving it (a Pi's ACT LED follows SD card activity by default),
// then writes brightness: max_brightness for on, 0 for off. Close turns the
// LED off and gives it back to the trigger it had.
package sysfs

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hl7edge/hl7edge/board/led"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/physic"
)

// DefaultRoot is where Linux lists its LEDs.
const DefaultRoot = "/sys/class/leds"

// Board holds the kernel LEDs mapped to logical LEDs.
type Board struct {
	pins led.Pins
	own  []*LED
}

// Open takes over the kernel LEDs named in names (indexed by led.LED; an
// empty name leaves that logical LED unwired) under root.
func Open(root string, names [led.NumLEDs]string, log *slog.Logger) (*Board, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if root == "" {
		root = DefaultRoot
	}
	b := &Board{}
	mapped := 0
	for i, name := range names {
		if name == "" {
			continue
		}
		mapped++
		if j := slices.Index(names[:i], name); j >= 0 {
			_ = b.Close()
			return nil, fmt.Errorf("LED %q is mapped twice (leds.%s and leds.%s): give each logical LED its own kernel LED or leave one empty", name, led.LED(j), led.LED(i))
		}
		l, err := openLED(root, led.LED(i), name)
		if err != nil {
			_ = b.Close()
			return nil, err
		}
		b.own = append(b.own, l)
		b.pins[i] = l
		log.Info("kernel LED taken over", "led", led.LED(i).String(), "name", name, "previous_trigger", l.prevTrigger)
	}
	if mapped == 0 {
		return nil, fmt.Errorf("board sysfs: no LED mapped: set at least one of leds.sys, leds.link, leds.act, leds.fault to one of: %s", available(root))
	}
	return b, nil
}

// Pins returns the mapped LEDs; unmapped ones are nil.
func (b *Board) Pins() led.Pins { return b.pins }

// Close turns every LED off and restores its previous trigger.
func (b *Board) Close() error {
	var errs []error
	for _, l := range b.own {
		errs = append(errs, l.release())
	}
	b.own = nil
	return errors.Join(errs...)
}

// LED is one kernel LED as a gpio.PinOut.
type LED struct {
	logical     led.LED
	name, dir   string
	on          []byte // max_brightness, written for High
	prevTrigger string
}

func openLED(root string, logical led.LED, name string) (*LED, error) {
	key := "leds." + logical.String()
	if name != filepath.Base(name) || name == "." || name == ".." {
		return nil, fmt.Errorf("LED %q (%s) is not a name under %s: set %s to one of: %s", name, key, root, key, available(root))
	}
	dir := filepath.Join(root, name)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("LED %q not found under %s: set %s to one of: %s", name, root, key, available(root))
	}
	l := &LED{logical: logical, name: name, dir: dir, on: []byte("1")}
	trig, err := os.ReadFile(filepath.Join(dir, "trigger"))
	if err != nil {
		return nil, fmt.Errorf("LED %q (%s): read its trigger: %w", name, key, err)
	}
	l.prevTrigger, _ = ParseTrigger(string(trig))
	if err := writeAttr(dir, "trigger", []byte("none")); err != nil {
		return nil, fmt.Errorf("LED %q (%s): set its trigger to none so the kernel stops driving it: %w%s", name, key, err, permHint(err))
	}
	if raw, err := os.ReadFile(filepath.Join(dir, "max_brightness")); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && v > 0 {
			l.on = []byte(strconv.Itoa(v))
		}
	}
	if err := l.Out(gpio.Low); err != nil {
		l.restoreTrigger()
		return nil, fmt.Errorf("LED %q (%s): %w%s", name, key, err, permHint(err))
	}
	return l, nil
}

func permHint(err error) string {
	if errors.Is(err, fs.ErrPermission) {
		return ": hl7edge needs write access to the LED's trigger and brightness (run it as root or grant the files to its user with a udev rule)"
	}
	return ""
}

// writeAttr writes one sysfs attribute. No O_CREATE: an LED that vanished
// (an unplugged USB device) must fail, not leave a file behind.
func writeAttr(dir, attr string, v []byte) error {
	f, err := os.OpenFile(filepath.Join(dir, attr), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Out lights the LED at its full brightness or turns it off.
func (l *LED) Out(level gpio.Level) error {
	v := []byte("0")
	if level {
		v = l.on
	}
	if err := writeAttr(l.dir, "brightness", v); err != nil {
		return fmt.Errorf("set brightness of LED %q: %w", l.name, err)
	}
	return nil
}

func (l *LED) release() error {
	err := l.Out(gpio.Low)
	l.restoreTrigger()
	return err
}

func (l *LED) restoreTrigger() {
	if l.prevTrigger == "" || l.prevTrigger == "none" {
		return
	}
	// Best effort: the LED is off either way.
	_ = writeAttr(l.dir, "trigger", []byte(l.prevTrigger))
}

func (l *LED) String() string   { return "sysfs/" + l.name }
func (l *LED) Name() string     { return l.name }
func (l *LED) Number() int      { return -1 }
func (l *LED) Function() string { return "Out" }
func (l *LED) Halt() error      { return nil }
func (l *LED) PWM(gpio.Duty, physic.Frequency) error {
	return errors.New("sysfs LED: PWM not supported")
}

// ParseTrigger reads a trigger attribute such as "[mmc0] none timer" and
// returns the active trigger (the bracketed one) and every choice.
func ParseTrigger(s string) (active string, choices []string) {
	for _, f := range strings.Fields(s) {
		if len(f) >= 2 && f[0] == '[' && f[len(f)-1] == ']' {
			f = f[1 : len(f)-1]
			if active == "" {
				active = f
			}
		}
		choices = append(choices, f)
	}
	return active, choices
}

// available lists the LEDs under root for error messages.
func available(root string) string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Sprintf("(none: %v; this kernel exposes no LEDs there, use device.board: sim or rpi, or set leds.sysfs_root)", err)
	}
	var names []string
	for _, e := range entries {
		// Entries under /sys/class/leds are symlinks to device directories.
		if st, err := os.Stat(filepath.Join(root, e.Name())); err == nil && st.IsDir() {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return "(none: " + root + " is empty; use device.board: sim or rpi)"
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}
