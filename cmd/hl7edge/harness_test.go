package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/build/freeport"
	"github.com/hl7edge/hl7edge/device/admin"
	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/logtest"
)

// binPath is the real binary the end-to-end tests run, built once.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hl7edge-bin-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "hl7edge")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build hl7edge: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is one running `hl7edge run` process.
type daemon struct {
	t      testing.TB
	cmd    *exec.Cmd
	cfg    string
	socket string
	mu     sync.Mutex
	lines  []string
	leaks  []string    // stderr lines holding logtest.Marker: message content in the log
	watch  chan string // every stderr line, when someone listens
	exited chan struct{}
}

// freePort is a loopback port held for t (see build/freeport for why not port 0).
func freePort(t testing.TB) int {
	t.Helper()
	return freeport.Take(t)
}

// archiveCopy is one <GUID>.hl7 file in a file destination's directory.
type archiveCopy struct {
	GUID string
	Data []byte
}

// String is the GUID alone, so a list of copies prints short and without content.
func (c archiveCopy) String() string { return c.GUID }

// readArchive returns every <GUID>.hl7 file in dir by the control ID
// (MSH-10) it holds: more than one copy of a control ID is a duplicate
// delivery, none a loss.
func readArchive(t testing.TB, dir string) map[string][]archiveCopy {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.hl7"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]archiveCopy{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := hl7.Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		id := m.Header().ControlID
		out[id] = append(out[id], archiveCopy{GUID: strings.TrimSuffix(filepath.Base(f), ".hl7"), Data: b})
	}
	return out
}

func startDaemon(t testing.TB, cfgPath, socket, waitAddr string) *daemon {
	t.Helper()
	d := &daemon{t: t, cfg: cfgPath, socket: socket, exited: make(chan struct{}), watch: make(chan string, 4096)}
	d.cmd = exec.Command(binPath, "run", "--config", cfgPath)
	// HL7EDGE_DAEMON_ENV ("GOMEMLIMIT=36MiB GOGC=50") sets the daemon's
	// environment alone, so a benchmark can try runtime settings without
	// also changing the load generator's.
	if extra := os.Getenv("HL7EDGE_DAEMON_ENV"); extra != "" {
		d.cmd.Env = append(os.Environ(), strings.Fields(extra)...)
	}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A test that ends without stopping its daemon (a Fatal on the
		// way, or none asked for) must not leave it running: one was found
		// still up after every make test, holding its port and CPU.
		select {
		case <-d.exited:
		default:
			d.kill()
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, l := range d.leaks {
			t.Errorf("the daemon logged message content (logtest.Marker): %s", l)
		}
	})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if logtest.Leaks([]byte(line)) {
				d.mu.Lock()
				d.leaks = append(d.leaks, line)
				d.mu.Unlock()
			}
			d.mu.Lock()
			d.lines = append(d.lines, line)
			if len(d.lines) > 20000 {
				d.lines = d.lines[10000:]
			}
			d.mu.Unlock()
			select {
			case d.watch <- line:
			default:
			}
		}
		_ = d.cmd.Wait()
		close(d.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The gateway and the admin socket start side by side: a test that
		// asks for stats the moment MLLP listens could find the socket
		// bound but not yet listening. Wait for both.
		c, err := net.DialTimeout("tcp", waitAddr, time.Second)
		if err == nil {
			c.Close()
			if socket == "" {
				return d
			}
			if a, err := net.DialTimeout("unix", socket, time.Second); err == nil {
				a.Close()
				return d
			}
		}
		select {
		case <-d.exited:
			t.Fatalf("hl7edge exited during start-up:\n%s", d.tail(40))
		default:
		}
		if time.Now().After(deadline) {
			d.kill()
			t.Fatalf("hl7edge did not listen on %s within 30s:\n%s", waitAddr, d.tail(40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *daemon) tail(n int) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.lines
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func (d *daemon) logText() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.lines, "\n")
}

func (d *daemon) kill() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
}

// stop sends SIGTERM and expects a clean exit.
func (d *daemon) stop() {
	d.t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.kill()
		d.t.Fatalf("hl7edge did not stop within 30s of SIGTERM:\n%s", d.tail(40))
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		d.t.Fatalf("hl7edge exited %d after SIGTERM:\n%s", code, d.tail(40))
	}
}

// stats asks the running daemon for `spool stats` over the admin socket.
func (d *daemon) stats() appliance.SpoolReport {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := admin.Call(ctx, d.socket, command.Request{ID: "t", Name: command.SpoolStats})
	if err != nil || r.Status != command.Successful {
		d.t.Fatalf("spool stats: %v %+v", err, r)
	}
	return decodeStats(d.t, r.Data)
}
