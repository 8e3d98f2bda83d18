// Package board picks the hardware profile that gives the four logical LEDs
// their pins: sim (text, the default off-hardware), rpi (GPIO header lines)
// or sysfs (kernel LEDs under /sys/class/leds).
package board

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hl7edge/hl7edge/board/led"
	"github.com/hl7edge/hl7edge/board/rpi"
	"github.com/hl7edge/hl7edge/board/sim"
	"github.com/hl7edge/hl7edge/board/sysfs"
)

// Board supplies the LED pins of one profile.
type Board interface {
	// Pins are indexed by led.LED; nil means the board has no such LED.
	Pins() led.Pins
	// Close turns the LEDs off and gives the hardware back.
	Close() error
}

// Profile names, the values of device.board.
const (
	Sim   = "sim"
	RPi   = "rpi"
	Sysfs = "sysfs"
)

// Profiles lists the profile names.
func Profiles() []string { return []string{Sim, RPi, Sysfs} }

// CheckProfile says whether name is a profile ("" means sim).
func CheckProfile(name string) error {
	if name == "" || slices.Contains(Profiles(), name) {
		return nil
	}
	return fmt.Errorf("board %q unknown: set device.board to one of %s", name, strings.Join(Profiles(), ", "))
}

// LEDConfig is the leds: block: logical LED to GPIO line (rpi) or kernel
// LED name (sysfs). An empty entry leaves that LED unwired, which suits a
// board with fewer LEDs (a Pi has two kernel LEDs). With rpi and all four
// empty, rpi.DefaultPins apply.
type LEDConfig struct {
	Sys       string `yaml:"sys"`
	Link      string `yaml:"link"`
	Act       string `yaml:"act"`
	Fault     string `yaml:"fault"`
	SysfsRoot string `yaml:"sysfs_root"`
}

// SetDefaults fills sysfs_root.
func (c *LEDConfig) SetDefaults() {
	if c.SysfsRoot == "" {
		c.SysfsRoot = sysfs.DefaultRoot
	}
}

// Names returns the four names indexed by led.LED.
func (c LEDConfig) Names() [led.NumLEDs]string {
	return [led.NumLEDs]string{led.SYS: c.Sys, led.LINK: c.Link, led.ACT: c.Act, led.FAULT: c.Fault}
}

// Validate checks what can be checked without the hardware.
func (c LEDConfig) Validate() error {
	names := c.Names()
	for i, n := range names {
		key := "leds." + led.LED(i).String()
		if n != strings.TrimSpace(n) || strings.ContainsAny(n, "/\\ \t\n\x00") || n == "." || n == ".." {
			return fmt.Errorf("%s %q is not a pin or LED name: use a GPIO line such as GPIO17 (rpi) or an entry of /sys/class/leds such as led0 (sysfs)", key, n)
		}
		if n == "" {
			continue
		}
		if j := slices.Index(names[:i], n); j >= 0 {
			return fmt.Errorf("%s and leds.%s are both %q: give each LED its own pin, or leave one empty", key, led.LED(j), n)
		}
	}
	if c.SysfsRoot != "" && !filepath.IsAbs(c.SysfsRoot) {
		return fmt.Errorf("leds.sysfs_root %q is not an absolute path: use /sys/class/leds", c.SysfsRoot)
	}
	return nil
}

// Open opens the named profile ("" means sim). The sim board logs LED
// changes at Debug level on log.
func Open(profile string, cfg LEDConfig, log *slog.Logger) (Board, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := CheckProfile(profile); err != nil {
		return nil, err
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With("board", profile)
	switch profile {
	case RPi:
		names := cfg.Names()
		if names == ([led.NumLEDs]string{}) {
			names = rpi.DefaultPins()
		}
		return rpi.Open(names, log)
	case Sysfs:
		return sysfs.Open(cfg.SysfsRoot, cfg.Names(), log)
	}
	return OpenSim(nil, log), nil
}

// OpenSim makes a sim board. With w set (the demo's terminal) every change
// is printed there; otherwise changes are logged at Debug level.
func OpenSim(w io.Writer, log *slog.Logger) *sim.Board {
	return sim.New(sim.Options{Writer: w, Log: log})
}
