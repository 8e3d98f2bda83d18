package sysfs

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/board/led"
	"github.com/hl7edge/hl7edge/device/frontpanel"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"periph.io/x/conn/v3/gpio"
)

// fakeLEDs builds a tree shaped like /sys/class/leds.
func fakeLEDs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for name, files := range map[string]map[string]string{
		"led0": {"trigger": "[mmc0] none timer heartbeat", "brightness": "255", "max_brightness": "255"},
		"led1": {"trigger": "none [default-on] timer", "brightness": "1", "max_brightness": "1"},
		"led2": {"trigger": "[none] timer", "brightness": "0"}, // no max_brightness: 1
	} {
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, v := range files {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Not an LED: a stray file must not be offered as one.
	if err := os.WriteFile(filepath.Join(root, "README"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func read(t *testing.T, root, led, attr string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, led, attr))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

type chanTicker chan time.Time

func (c chanTicker) C() <-chan time.Time { return c }
func (c chanTicker) Stop()               {}

func TestEngineBlinksKernelLEDAtSysRhythm(t *testing.T) {
	root := fakeLEDs(t)
	b, err := Open(root, [led.NumLEDs]string{led.SYS: "led0", led.FAULT: "led2"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, root, "led0", "trigger"); got != "none" {
		t.Fatalf("led0 trigger = %q, want none written before any brightness", got)
	}
	if got := read(t, root, "led0", "brightness"); got != "0" {
		t.Fatalf("led0 brightness = %q after Open, want 0", got)
	}
	pins := b.Pins()
	if pins[led.LINK] != nil || pins[led.ACT] != nil {
		t.Fatal("unmapped LEDs got pins")
	}

	// The engine reads health first thing in each tick, after the previous
	// tick's writes: sampling brightness there sees every tick's result.
	const n = 40
	ticks := make(chanTicker, n)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for k := 1; k <= n; k++ {
		ticks <- t0.Add(time.Duration(k) * frontpanel.DefaultTick)
	}
	var sys, fault []string // sys[k] is led0 after tick k
	done := make(chan struct{})
	eng, err := frontpanel.New(frontpanel.Options{
		Pins: pins,
		Snapshot: func() health.Snapshot {
			sys = append(sys, read(t, root, "led0", "brightness"))
			fault = append(fault, read(t, root, "led2", "brightness"))
			if len(sys) == n {
				close(done)
			}
			return health.Snapshot{ClockSynced: true}
		},
		NewTicker: func(time.Duration) frontpanel.Ticker { return ticks },
	})
	if err != nil {
		t.Fatal(err)
	}
	eng.SetReady(true)
	ctx, cancel := context.WithCancel(t.Context())
	ran := make(chan error)
	go func() { ran <- eng.Run(ctx) }()
	<-done
	cancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	// Slow blink from tick 1: five ticks at max_brightness, five at 0.
	for k := 1; k < n; k++ {
		want := "0"
		if (k-1)%10 < 5 {
			want = "255"
		}
		if sys[k] != want {
			t.Fatalf("led0 brightness after tick %d = %q, want %q (1 Hz); all: %v", k, sys[k], want, sys)
		}
		if fault[k] != "0" {
			t.Fatalf("FAULT (led2) lit at tick %d on a healthy box", k)
		}
	}
	if got := read(t, root, "led0", "brightness"); got != "0" {
		t.Fatalf("led0 = %q after Run ended, want 0", got)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, root, "led0", "trigger"); got != "mmc0" {
		t.Errorf("led0 trigger = %q after Close, want mmc0 back", got)
	}
	if got := read(t, root, "led2", "trigger"); got != "none" {
		t.Errorf("led2 trigger = %q after Close, want none (it was none)", got)
	}
}

func TestOpenErrors(t *testing.T) {
	root := fakeLEDs(t)
	cases := []struct {
		name  string
		root  string
		names [led.NumLEDs]string
		want  string
	}{
		{"missing LED", root, [4]string{led.ACT: "act"},
			`LED "act" not found under ` + root + `: set leds.act to one of: led0, led1, led2`},
		{"path instead of name", root, [4]string{led.SYS: "../led0"},
			`LED "../led0" (leds.sys) is not a name under ` + root},
		{"nothing mapped", root, [4]string{},
			"no LED mapped: set at least one of leds.sys, leds.link, leds.act, leds.fault to one of: led0, led1, led2"},
		{"mapped twice", root, [4]string{led.SYS: "led0", led.FAULT: "led0"},
			`LED "led0" is mapped twice (leds.sys and leds.fault)`},
		{"no LED class", filepath.Join(root, "nope"), [4]string{led.SYS: "led0"},
			"this kernel exposes no LEDs there"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Open(c.root, c.names, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open: %v\nwant it to say %q", err, c.want)
			}
		})
	}
	// A failed Open gives back what it took: led0 was taken before the
	// duplicate was found.
	if got := read(t, root, "led0", "trigger"); got != "mmc0" {
		t.Errorf("led0 trigger = %q after failed Opens, want mmc0 restored", got)
	}
}

func TestVanishedLEDFails(t *testing.T) {
	root := fakeLEDs(t)
	b, err := Open(root, [4]string{led.LINK: "led1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Pins()[led.LINK].Out(gpio.High); err != nil {
		t.Fatal(err)
	}
	if got := read(t, root, "led1", "brightness"); got != "1" {
		t.Fatalf("led1 = %q, want max_brightness 1", got)
	}
	if err := os.RemoveAll(filepath.Join(root, "led1")); err != nil {
		t.Fatal(err)
	}
	err = b.Pins()[led.LINK].Out(gpio.Low)
	if err == nil || !strings.Contains(err.Error(), `LED "led1"`) {
		t.Fatalf("Out on a vanished LED: %v", err)
	}
	if _, statErr := os.Stat(filepath.Join(root, "led1")); statErr == nil {
		t.Fatal("writing a vanished LED created it")
	}
	if b.Close() == nil {
		t.Fatal("Close of a vanished LED reported success")
	}
}

func TestParseTrigger(t *testing.T) {
	for in, want := range map[string]struct {
		active  string
		choices []string
	}{
		"[mmc0] none timer\n": {"mmc0", []string{"mmc0", "none", "timer"}},
		"none [default-on]":   {"default-on", []string{"none", "default-on"}},
		"none timer":          {"", []string{"none", "timer"}},
		"":                    {"", nil},
		"[]":                  {"", []string{""}},
		"[a] [b]":             {"a", []string{"a", "b"}},
		"  [heartbeat]  \t ":  {"heartbeat", []string{"heartbeat"}},
	} {
		active, choices := ParseTrigger(in)
		if active != want.active || !slices.Equal(choices, want.choices) {
			t.Errorf("ParseTrigger(%q) = %q %q, want %q %q", in, active, choices, want.active, want.choices)
		}
	}
}

func FuzzParseTrigger(f *testing.F) {
	for _, s := range []string{"[mmc0] none timer", "none [default-on] timer heartbeat", "", "[", "]", "[[x]]", "a\x00[b]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		active, choices := ParseTrigger(s)
		if active != "" && !slices.Contains(choices, active) {
			t.Fatalf("active %q not among choices %q", active, choices)
		}
		for _, c := range choices {
			if strings.ContainsAny(c, " \t\n") {
				t.Fatalf("choice %q has whitespace", c)
			}
		}
		if len(choices) > len(strings.Fields(s)) {
			t.Fatalf("%d choices from %d words", len(choices), len(strings.Fields(s)))
		}
	})
}
