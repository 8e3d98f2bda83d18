package serialport

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
	"golang.org/x/sys/unix"
)

// ptyDevice is the "device" end of a real kernel pseudo-terminal. The code
// under test opens the other end through a symlink, as it opens
// /dev/serial/by-id/... links in the field.
type ptyDevice struct {
	t    testing.TB
	m    *os.File // master: what the device sends and reads; deadlines work
	s    *os.File // slave, held so the pty outlives the code's reopenings
	link string
	once sync.Once
}

// newPTY makes a pty in raw mode and points link at its slave.
func newPTY(t testing.TB, link string) *ptyDevice {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Fatalf("opening a pty: %v", err)
	}
	makeRaw(t, s)
	// pty.Open made the master blocking (it called Fd()); a non-blocking
	// duplicate goes through the poller, so read deadlines work on it.
	fd, err := unix.Dup(int(m.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	m.Close()
	d := &ptyDevice{t: t, m: os.NewFile(uintptr(fd), "ptmx"), s: s, link: link}
	os.Remove(link)
	if err := os.Symlink(s.Name(), link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.yank)
	return d
}

// makeRaw turns off echo, line editing and CR/LF translation, so the bytes
// the device writes before the code under test opens the port (and sets the
// same itself) are neither echoed nor altered.
func makeRaw(t testing.TB, f *os.File) {
	fd := int(f.Fd())
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB | unix.CBAUD
	tio.Cflag |= unix.CS8 | unix.B115200
	tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
}

// yank is the adapter pulled out: the line hangs up and the path goes.
func (d *ptyDevice) yank() {
	d.once.Do(func() {
		os.Remove(d.link)
		d.m.Close()
		d.s.Close()
	})
}

// write sends raw bytes from the device.
func (d *ptyDevice) write(b []byte) {
	d.t.Helper()
	if _, err := d.m.Write(b); err != nil {
		d.t.Fatalf("device write: %v", err)
	}
}

// readByte reads one byte from the line within wait.
func (d *ptyDevice) readByte(wait time.Duration) (byte, error) {
	var b [1]byte
	d.m.SetReadDeadline(time.Now().Add(wait))
	_, err := io.ReadFull(d.m, b[:])
	return b[0], err
}

// memIntake is an in-memory flow.Intake: it keeps every accepted message
// and answers with a real HL7 ACK. decide, when set, picks the verdict (and
// may block, to hold a message "in storage").
type memIntake struct {
	mu      sync.Mutex
	got     [][]byte
	n       int
	discard bool // count only (benchmarks)
	decide  func(raw []byte) flow.Code
}

func (m *memIntake) Accept(ctx context.Context, in flow.Inbound) flow.Outcome {
	code := flow.Accepted
	if m.decide != nil {
		code = m.decide(in.Raw)
	}
	msg, err := hl7.Parse(in.Raw)
	if err != nil {
		return flow.Outcome{Code: flow.Rejected, Reason: "unreadable",
			ACK: hl7.ACKUnparsed(in.Raw, flow.Rejected, hl7.ErrorCode(err), "unreadable", "", time.Now())}
	}
	ctrl := msg.Header().ControlID
	out := flow.Outcome{Code: code, ControlID: ctrl}
	if code == flow.Accepted {
		m.mu.Lock()
		m.n++
		if !m.discard {
			m.got = append(m.got, bytes.Clone(in.Raw))
		}
		out.GUID = fmt.Sprintf("guid-%d", m.n)
		m.mu.Unlock()
	} else {
		out.Reason = "refused by test"
	}
	out.ACK = hl7.ACK(msg, code, 0, out.Reason, "A"+ctrl, time.Now())
	return out
}

func (m *memIntake) stored() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([][]byte(nil), m.got...)
}

func (m *memIntake) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}

// message i: an ORU of varying size (about 100 bytes to 3 KiB, so LIS01
// needs up to 13 frames and frame numbers wrap) with non-ASCII text, which
// must arrive byte for byte.
func message(i int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "MSH|^~\\&|LAB|ANALYZER|HIS|WARD|20240101120000||ORU^R01|MSG-%04d|P|2.5\r", i)
	fmt.Fprintf(&b, "PID|1||%d^^^HOSP||Müller^Zoë||19700101|F\r", 100000+i)
	for j := 0; j < (i*7)%40; j++ {
		fmt.Fprintf(&b, "OBX|%d|NM|GLU^Glucose||%d.%d|mmol/L|3.9-5.6||||F\r", j+1, (i+j)%20, j%10)
	}
	return b.Bytes()
}

// sized is a message of exactly n bytes.
func sized(i, n int) []byte {
	m := fmt.Appendf(nil, "MSH|^~\\&|LAB|ANALYZER|HIS|WARD|20240101120000||ORU^R01|MSG-%04d|P|2.5\rOBX|1|TX|NOTE||", i)
	for len(m) < n-1 {
		m = append(m, 'a'+byte(len(m)%26))
	}
	return append(m, '\r')
}

// fixture is a Source running on a pty.
type fixture struct {
	t      testing.TB
	dir    string
	link   string
	dev    *ptyDevice
	intake *memIntake
	reg    *health.Registry
	comp   *health.Component
	cancel context.CancelFunc
	done   chan error
}

func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testConfig(link, framing string) Config {
	return Config{Device: link, Baud: 115200, Framing: framing, ReopenInterval: units.Duration(20 * time.Millisecond)}
}

// startSource runs a source on a fresh pty (when withDevice) and stops it
// at cleanup, failing if Run does not return.
func startSource(t testing.TB, framing string, withDevice bool, decide func([]byte) flow.Code, tune func(*Config, *Options)) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{t: t, dir: dir, link: filepath.Join(dir, "ttyANALYZER"), intake: &memIntake{decide: decide}, done: make(chan error, 1)}
	if withDevice {
		f.dev = newPTY(t, f.link)
	}
	f.reg = health.NewRegistry("test", "0", nil)
	f.comp = f.reg.Component(health.Source, "analyzer", "serial")
	cfg := testConfig(f.link, framing)
	opts := Options{Log: testLog(), Health: f.comp}
	if tune != nil {
		tune(&cfg, &opts)
	}
	src, err := NewSource("analyzer", cfg, f.intake, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() { f.done <- src.Run(ctx) }()
	t.Cleanup(f.stop)
	return f
}

// stop cancels Run and proves it returns (its goroutine ends).
func (f *fixture) stop() {
	f.cancel()
	select {
	case err := <-f.done:
		if err != nil {
			f.t.Errorf("Run returned %v", err)
		}
		f.done <- nil // a second stop returns at once
	case <-time.After(5 * time.Second):
		f.t.Error("Run did not return after cancel")
	}
	if s := f.comp.State(); s != health.Stopped {
		f.t.Errorf("state after Run = %s, want stopped", s)
	}
}

// waitState polls the component until it reaches want.
func waitState(t testing.TB, c *health.Component, want health.State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("state %s, want %s", c.State(), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitFor polls cond.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// noise is line garbage that holds no framing byte of either framing.
func noise(i int) []byte {
	n := i%5 + 1
	b := make([]byte, n)
	for j := range b {
		b[j] = "\x00\xff~?!\x7f"[(i+j)%6]
	}
	return b
}
