package board

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/board/led"
	"gopkg.in/yaml.v3"
	"periph.io/x/conn/v3/gpio"
)

func TestSampleConfig(t *testing.T) {
	raw, err := os.ReadFile("sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Device struct {
			Board string `yaml:"board"`
		} `yaml:"device"`
		LEDs LEDConfig `yaml:"leds"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if err := CheckProfile(cfg.Device.Board); err != nil {
		t.Fatal(err)
	}
	if err := cfg.LEDs.Validate(); err != nil {
		t.Fatal(err)
	}
	want := LEDConfig{Sys: "GPIO17", Link: "GPIO27", Act: "GPIO22", Fault: "GPIO23", SysfsRoot: "/sys/class/leds"}
	if cfg.LEDs != want {
		t.Fatalf("sample leds = %+v, want %+v", cfg.LEDs, want)
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  LEDConfig
		want string // "" = valid
	}{
		{LEDConfig{}, ""},
		{LEDConfig{Sys: "ACT", Fault: "PWR"}, ""},
		{LEDConfig{Sys: "GPIO17", Link: "GPIO17"}, `leds.link and leds.sys are both "GPIO17"`},
		{LEDConfig{Act: "../../etc"}, `leds.act "../../etc" is not a pin or LED name`},
		{LEDConfig{Fault: " led0"}, `leds.fault " led0" is not a pin or LED name`},
		{LEDConfig{Sys: "led0", SysfsRoot: "sys/class/leds"}, `leds.sysfs_root "sys/class/leds" is not an absolute path`},
	} {
		err := c.cfg.Validate()
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", c.cfg, err, c.want)
		}
	}
	var d LEDConfig
	d.SetDefaults()
	if d.SysfsRoot != "/sys/class/leds" {
		t.Errorf("default sysfs_root %q", d.SysfsRoot)
	}
}

func TestOpenProfiles(t *testing.T) {
	b, err := Open("", LEDConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range b.Pins() {
		if p == nil {
			t.Fatalf("sim board has no %v", led.LED(i))
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	if _, err := Open("beaglebone", LEDConfig{}, nil); err == nil || !strings.Contains(err.Error(), "set device.board to one of sim, rpi, sysfs") {
		t.Fatalf("unknown profile: %v", err)
	}
	if _, err := Open(Sim, LEDConfig{Sys: "x", Act: "x"}, nil); err == nil {
		t.Fatal("invalid leds block accepted")
	}

	root := t.TempDir()
	dir := filepath.Join(root, "led0")
	must(t, os.Mkdir(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "trigger"), []byte("[mmc0] none\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "brightness"), []byte("0\n"), 0o644))
	sb, err := Open(Sysfs, LEDConfig{Sys: "led0", SysfsRoot: root}, nil)
	if err != nil {
		t.Fatal(err)
	}
	must(t, sb.Pins()[led.SYS].Out(gpio.High))
	if got, _ := os.ReadFile(filepath.Join(dir, "brightness")); string(got) != "1" {
		t.Fatalf("brightness = %q", got)
	}
	must(t, sb.Close())
	if _, err := Open(Sysfs, LEDConfig{Act: "act", SysfsRoot: root}, nil); err == nil ||
		!strings.Contains(err.Error(), `LED "act" not found under `+root+`: set leds.act to one of: led0`) {
		t.Fatalf("sysfs with a wrong name: %v", err)
	}

	if m, _ := filepath.Glob("/dev/gpiochip*"); len(m) == 0 {
		if _, err := Open(RPi, LEDConfig{}, nil); err == nil || !strings.Contains(err.Error(), "not a Raspberry Pi") {
			t.Fatalf("rpi off hardware: %v", err)
		}
	}
}

func FuzzLEDConfig(f *testing.F) {
	for _, s := range []string{
		"sys: GPIO17\nlink: GPIO27\nact: GPIO22\nfault: GPIO23\nsysfs_root: /sys/class/leds\n",
		"sys: ACT\nfault: PWR\n", "sys: ../x", "sys: [1,2]", "{}", "sysfs_root: rel",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var c LEDConfig
		if yaml.Unmarshal([]byte(s), &c) != nil {
			return
		}
		if c.Validate() != nil {
			return
		}
		for _, n := range c.Names() {
			if strings.ContainsAny(n, "/\x00") || n == ".." {
				t.Fatalf("valid config with name %q", n)
			}
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
