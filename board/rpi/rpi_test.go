package rpi

import (
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/board/led"
	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/conn/v3/gpio"
)

// fakeLine stands in for a kernel GPIO line.
type fakeLine struct {
	gpio.PinIO
	name   string
	busy   bool // claimed by another consumer
	levels []gpio.Level
	closed bool
}

func (l *fakeLine) Name() string { return l.name }
func (l *fakeLine) Out(v gpio.Level) error {
	if l.busy {
		return errors.New("device or resource busy")
	}
	l.levels = append(l.levels, v)
	return nil
}
func (l *fakeLine) Close() { l.closed = true }

type fakeChip map[string]*fakeLine

func (c fakeChip) Find(name string) (Line, bool) {
	l, ok := c[name]
	return l, ok
}
func (c fakeChip) Where() string { return "gpiochip0 (pinctrl-bcm2711)" }

func newChip(busy ...string) fakeChip {
	c := fakeChip{}
	for n := range 28 {
		name := "GPIO" + strconv.Itoa(n)
		c[name] = &fakeLine{PinIO: gpio.INVALID, name: name, busy: slices.Contains(busy, name)}
	}
	return c
}

func TestOpenClaimsLinesLowAndCloseReleases(t *testing.T) {
	chip := newChip()
	b, err := OpenWith(chip, [led.NumLEDs]string{"GPIO17", "27", "gpio22", ""}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pins := b.Pins()
	for i, want := range []string{"GPIO17", "GPIO27", "GPIO22"} {
		if pins[i] == nil || pins[i].Name() != want {
			t.Fatalf("%v = %v, want line %s", led.LED(i), pins[i], want)
		}
		if l := chip[want]; !slices.Equal(l.levels, []gpio.Level{gpio.Low}) {
			t.Fatalf("%s driven %v on Open, want claimed low", want, l.levels)
		}
	}
	if pins[led.FAULT] != nil {
		t.Fatal("unmapped FAULT got a pin")
	}
	if err := pins[led.SYS].Out(gpio.High); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if l := chip["GPIO17"]; !l.closed || l.levels[len(l.levels)-1] != gpio.Low {
		t.Fatalf("GPIO17 after Close: closed=%v levels=%v, want low and released", l.closed, l.levels)
	}
	if chip["GPIO23"].closed || len(chip["GPIO23"].levels) != 0 {
		t.Fatal("Close touched a line it never claimed")
	}
}

func TestOpenErrors(t *testing.T) {
	cases := []struct {
		name  string
		chip  fakeChip
		names [led.NumLEDs]string
		want  string
	}{
		{"missing line", newChip(), [4]string{"GPIO17", "GPIO99"},
			`GPIO line "GPIO99" (leds.link) not found on gpiochip0 (pinctrl-bcm2711): set leds.link to a line name that gpioinfo lists, such as GPIO17`},
		{"line busy", newChip("GPIO22"), [4]string{"GPIO17", "GPIO27", "GPIO22"},
			`claim GPIO line "GPIO22" (leds.act) as an output: device or resource busy: is another program`},
		{"same line twice", newChip(), [4]string{"GPIO17", "17"},
			`GPIO line "GPIO17" is mapped to two LEDs (leds.link too)`},
		{"nothing mapped", newChip(), [4]string{}, "no LED mapped"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := OpenWith(c.chip, c.names, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("OpenWith: %v\nwant it to say %q", err, c.want)
			}
			// Whatever was claimed before the failure is released, low.
			if l := c.chip["GPIO17"]; len(l.levels) > 0 && (!l.closed || l.levels[len(l.levels)-1] == gpio.High) {
				t.Fatalf("GPIO17 left claimed after a failed Open: %+v", l)
			}
		})
	}
}

func TestOpenOffPi(t *testing.T) {
	if m, _ := filepath.Glob("/dev/gpiochip*"); len(m) > 0 {
		t.Skip("this machine has GPIO chips; the off-hardware error cannot be observed")
	}
	_, err := Open(DefaultPins(), nil)
	if err == nil {
		t.Fatal("Open succeeded without GPIO chips")
	}
	t.Logf("off-Pi: %v", err)
	for _, want := range []string{"board rpi", "not a Raspberry Pi", "device.board: sim"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// This package links no periph driver but the character device, so nothing
// can memory-map GPIO registers.
func TestOnlyCharacterDeviceDriverLinked(t *testing.T) {
	state, err := driverreg.Init()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range state.Loaded {
		names = append(names, d.String())
	}
	for _, f := range slices.Concat(state.Skipped, state.Failed) {
		names = append(names, f.D.String())
	}
	if !slices.Equal(names, []string{DriverName}) {
		t.Fatalf("periph drivers linked: %v, want only %s", names, DriverName)
	}
	if got := otherDrivers(&driverreg.State{}); got != nil {
		t.Fatalf("otherDrivers of nothing = %v", got)
	}
}

func TestLineName(t *testing.T) {
	for in, want := range map[string]string{
		"GPIO17": "GPIO17", "gpio17": "GPIO17", "17": "GPIO17", " 17 ": "GPIO17", "GPIO017": "GPIO17",
		"Gpio4": "GPIO4", "GPIO": "GPIO", "GPIOX": "GPIOX", "PWR_LED": "PWR_LED", "": "",
		"-1": "-1", "+5": "+5", "GPIO-1": "GPIO-1", "99999": "99999", "gpio 5": "gpio 5",
	} {
		if got := LineName(in); got != want {
			t.Errorf("LineName(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzLineName(f *testing.F) {
	for _, s := range []string{"GPIO17", "17", "gpio04", "PWR_LED", "", "GPIO", "gpio+1", "٣"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := LineName(s)
		if LineName(got) != got {
			t.Fatalf("LineName not idempotent: %q -> %q -> %q", s, got, LineName(got))
		}
		if got != strings.TrimSpace(s) {
			n, err := strconv.Atoi(strings.TrimPrefix(got, "GPIO"))
			if !strings.HasPrefix(got, "GPIO") || err != nil || n < 0 || "GPIO"+strconv.Itoa(n) != got {
				t.Fatalf("LineName(%q) = %q: neither kept nor GPIO<n>", s, got)
			}
		}
	})
}
