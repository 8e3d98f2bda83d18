package rpi

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
	for _, want := range []string{"not a Raspberry Pi", "device.board: sim"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "board rpi") {
		t.Errorf("error %q names the board; its caller does that", err)
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

// A GPIO chip the service user may not open is reported as a permission
// problem naming the device, its owner and the remedy, not as a missing
// chip. The check runs in a child process as nobody, so the kernel's own
// permission check refuses the open.
func TestChipAccessPermissionDenied(t *testing.T) {
	if pattern := os.Getenv("HL7EDGE_CHIPACCESS_PATTERN"); pattern != "" {
		fmt.Println(chipAccess(pattern))
		// Another chip opened but lacks the line: the permission problem
		// is still what is reported.
		_, err := openExplained(fakeChip{}, pattern, DefaultPins(), nil)
		fmt.Println("openExplained:", err)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a device node owned by another user and run a child as nobody")
	}
	dir, err := os.MkdirTemp("", "chipaccess")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The test binary sits in a directory only root may enter.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	child := filepath.Join(dir, "rpi.test")
	if err := os.WriteFile(child, self, 0o755); err != nil {
		t.Fatal(err)
	}
	chip := filepath.Join(dir, "gpiochip0")
	for _, c := range []struct {
		name string
		gid  int
		want []string
	}{
		{"root group", 0, []string{"permission denied", chip, "owner root:root, mode -rw-rw----", "runs as nobody", "udevadm trigger --subsystem-match=gpio --action=add"}},
		{"other group", 4242, []string{"permission denied", chip, "owner root:4242", "add the service user to the group that owns the device", "usermod -aG 4242 hl7edge"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(chip, nil, 0o660); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(chip, 0, c.gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(chip, 0o660); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(child, "-test.run=^TestChipAccessPermissionDenied$")
			cmd.Env = append(os.Environ(), "HL7EDGE_CHIPACCESS_PATTERN="+filepath.Join(dir, "gpiochip*"))
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{65534}}}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			for _, w := range c.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("chipAccess said %q, want it to say %q", out, w)
				}
			}
			if strings.Contains(string(out), "no /dev/gpiochip") || strings.Contains(string(out), "not found on gpiochip0 (pinctrl-bcm2711): set") {
				t.Errorf("a permission problem reported as a missing chip or line: %q", out)
			}
			if !strings.Contains(string(out), "openExplained: open "+chip+": permission denied") ||
				!strings.Contains(string(out), `GPIO line "GPIO17" for leds.sys is not on the chips that opened: gpiochip0 (pinctrl-bcm2711)`) {
				t.Errorf("a line missing from the chips that opened, beside one that did not: %q", out)
			}
		})
	}
	if err := os.Chmod(chip, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := chipAccess(filepath.Join(dir, "gpiochip*")); err != nil {
		t.Fatalf("an openable chip: %v", err)
	}
}

// periph's own log.Println lines become records of the daemon's logger, and
// the log package's output is the caller's again afterwards.
func TestPeriphLogLinesBecomeRecords(t *testing.T) {
	var std, structured bytes.Buffer
	prevOut, prevFlags := log.Writer(), log.Flags()
	t.Cleanup(func() { log.SetOutput(prevOut); log.SetFlags(prevFlags) })
	log.SetOutput(&std)
	log.SetFlags(log.Lshortfile)
	if _, err := initPeriph(slog.New(slog.NewTextHandler(&structured, nil))); err != nil {
		t.Logf("driverreg.Init: %v", err)
	}
	if log.Writer() != &std || log.Flags() != log.Lshortfile {
		t.Fatal("initPeriph left the log package's output or flags changed")
	}
	periphLog{slog.New(slog.NewTextHandler(&structured, nil))}.Write([]byte("opening gpio chip /dev/gpiochip0 failed. error: permission denied\n"))
	if !strings.Contains(structured.String(), `level=WARN msg="periph GPIO driver" component=periph detail="opening gpio chip /dev/gpiochip0 failed. error: permission denied"`) {
		t.Fatalf("periph line as a record: %q", structured.String())
	}
	if std.Len() != 0 {
		t.Fatalf("periph wrote unstructured lines: %q", std.String())
	}
}
