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
	"io/fs"
	stdlog "log"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/hl7edge/hl7edge/board/led"
	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/host/v3/gpioioctl"
)

// DriverName is the periph driver Open relies on, the only one it allows.
const DriverName = "ioctl-gpio"

// DefaultPins are the header lines for SYS, LINK, ACT and FAULT when the
// configuration names none (docs/design.md, LEDs and fault codes).
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
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f, err := chardev(log)
	if err != nil {
		return nil, err
	}
	return openExplained(f, chipGlob, names, log)
}

// openExplained is OpenWith, except that a line not found while some chip
// matching pattern could not be opened is reported as that chip's
// permission problem: the line is most likely on it. (A virt machine's or a
// HAT's chip opening while the header's chip does not is enough for periph
// to find "some" chips, and the missing line hid the real cause.)
func openExplained(f Finder, pattern string, names [led.NumLEDs]string, log *slog.Logger) (*Board, error) {
	b, err := OpenWith(f, names, log)
	var nf *lineNotFoundError
	if errors.As(err, &nf) {
		if perr := chipAccess(pattern); perr != nil {
			return nil, fmt.Errorf("%w (GPIO line %q for %s is not on the chips that opened: %s)", perr, nf.line, nf.key, nf.where)
		}
	}
	return b, err
}

// lineNotFoundError is a configured line that no chip offers.
type lineNotFoundError struct{ line, key, where string }

func (e *lineNotFoundError) Error() string {
	return fmt.Sprintf("GPIO line %q (%s) not found on %s: set %s to a line name that gpioinfo lists, such as GPIO17", e.line, e.key, e.where, e.key)
}

// chardev initialises periph with the character-device driver only.
func chardev(log *slog.Logger) (Finder, error) {
	state, err := initPeriph(log)
	if err != nil {
		return nil, fmt.Errorf("initialise periph GPIO drivers: %w", err)
	}
	if other := otherDrivers(state); len(other) > 0 {
		return nil, fmt.Errorf("periph drivers %s are linked into this binary and may map GPIO registers through /dev/mem; "+
			"hl7edge must link only periph.io/x/host/v3/gpioioctl (do not import periph.io/x/host/v3)", strings.Join(other, ", "))
	}
	if len(gpioioctl.Chips) == 0 {
		// periph skips a chip it cannot open without saying why; a
		// permission problem is the usual one on a fresh install and has its
		// own remedy.
		if err := chipAccess(chipGlob); err != nil {
			return nil, err
		}
		why := "no /dev/gpiochip* device"
		for _, f := range slices.Concat(state.Skipped, state.Failed) {
			if f.D.String() == DriverName && f.Err != nil {
				why = f.Err.Error()
			}
		}
		return nil, fmt.Errorf("no usable GPIO character device (%s): this is not a Raspberry Pi, or /dev/gpiochip* is not readable by hl7edge (add its user to the gpio group); set device.board: sim off hardware", why)
	}
	return chips(gpioioctl.Chips), nil
}

const chipGlob = "/dev/gpiochip*"

// initPeriph runs driverreg.Init with the standard log package's output
// turned into records of log. periph's gpioioctl reports each chip it cannot
// open with log.Println, which would land unstructured beside the daemon's
// records. driverreg.Init does its work once per process, and of the calls
// this package makes afterwards (Out, Close) none logs, so Init is the one
// window to cover; the previous output, flags and prefix are restored before
// it returns. hl7edge itself never writes through the log package, so
// nothing else is caught in the window.
func initPeriph(log *slog.Logger) (*driverreg.State, error) {
	out, flags, prefix := stdlog.Writer(), stdlog.Flags(), stdlog.Prefix()
	stdlog.SetOutput(periphLog{log})
	stdlog.SetFlags(0)
	stdlog.SetPrefix("")
	defer func() {
		stdlog.SetOutput(out)
		stdlog.SetFlags(flags)
		stdlog.SetPrefix(prefix)
	}()
	return driverreg.Init()
}

// periphLog makes each line periph writes through the log package a warning
// record of the daemon's logger.
type periphLog struct{ log *slog.Logger }

func (p periphLog) Write(b []byte) (int, error) {
	for line := range strings.Lines(string(b)) {
		if line = strings.TrimSpace(line); line != "" {
			p.log.Warn("periph GPIO driver", "component", "periph", "detail", line)
		}
	}
	return len(b), nil
}

// chipAccess reports why the GPIO character devices matching pattern cannot
// be used: none exist, or the first one this process may not open, with its
// owner, group and mode and the remedy. It returns nil when every device
// opens (the cause lies elsewhere).
func chipAccess(pattern string) error {
	paths, err := filepath.Glob(pattern)
	if err != nil || len(paths) == 0 {
		return nil
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err == nil {
			_ = f.Close()
			continue
		}
		if !errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("GPIO character device %s: %w", p, err)
		}
		owner := "unknown owner"
		var gid uint32
		if fi, serr := os.Stat(p); serr == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				gid = st.Gid
				owner = fmt.Sprintf("owner %s:%s, mode %s", userName(st.Uid), groupName(st.Gid), fi.Mode().Perm())
			}
		}
		runAs := fmt.Sprintf("this process runs as %s", userName(uint32(os.Geteuid())))
		if gs, gerr := os.Getgroups(); gerr == nil {
			var names []string
			for _, g := range gs {
				names = append(names, groupName(uint32(g)))
			}
			runAs += " with groups " + strings.Join(names, ",")
		}
		if gid == 0 {
			return fmt.Errorf("%w (%s; %s): the device still has group root, so udev has not applied /usr/lib/udev/rules.d/60-hl7edge.rules, which gives GPIO chips to group gpio; "+
				"run sudo udevadm trigger --subsystem-match=gpio --action=add (or reboot), then sudo systemctl restart hl7edge", err, owner, runAs)
		}
		g := groupName(gid)
		return fmt.Errorf("%w (%s; %s): add the service user to the group that owns the device "+
			"(sudo usermod -aG %s hl7edge; the unit's SupplementaryGroups= must name it too), then sudo systemctl restart hl7edge", err, owner, runAs, g)
	}
	return nil
}

func userName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return u.Username
	}
	return id
}

func groupName(gid uint32) string {
	id := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(id); err == nil {
		return g.Name
	}
	return id
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
			return nil, &lineNotFoundError{line: name, key: key, where: f.Where()}
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
		return nil, errors.New("no LED mapped: set leds.sys, leds.link, leds.act and leds.fault to GPIO line names such as GPIO17")
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
