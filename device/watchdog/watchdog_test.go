package watchdog

// These tests set environment variables (go-systemd reads NOTIFY_SOCKET and
// WATCHDOG_* from the environment), so none of them runs in parallel.

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// notifySocket plays systemd: a real unix datagram socket named by
// NOTIFY_SOCKET.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	dir, err := os.MkdirTemp("", "wd") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "")
	t.Setenv("WATCHDOG_PID", "")
	return c
}

// recv reads one datagram, or returns "" after wait.
func recv(t *testing.T, c *net.UnixConn, wait time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// awaitMsg reads datagrams until one equals want, failing after a generous
// deadline (a bound, not a timing assertion).
func awaitMsg(t *testing.T, c *net.UnixConn, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if recv(t, c, time.Until(deadline)) == want {
			return
		}
	}
	t.Fatalf("systemd never got %q", want)
}

func TestReadyAndStopping(t *testing.T) {
	c := notifySocket(t)
	w := New(Options{})
	if err := w.Ready(); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, c, 5*time.Second); got != "READY=1" {
		t.Fatalf("got %q, want READY=1", got)
	}
	if err := w.Stopping(); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, c, 5*time.Second); got != "STOPPING=1" {
		t.Fatalf("got %q, want STOPPING=1", got)
	}
}

func TestNotifyErrorNamesSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	err := New(Options{}).Ready()
	if err == nil || !strings.Contains(err.Error(), "READY=1") || !strings.Contains(err.Error(), "gone") {
		t.Fatalf("Ready to a missing socket: %v", err)
	}
}

func TestNoSystemdIsANoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "100000")
	w := New(Options{})
	if err := w.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := w.Stopping(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel() // Run must not need it: it returns at once
	if err := w.Run(ctx, health.NewRegistry("d", "v", nil)); err != nil {
		t.Fatal(err)
	}
}

func TestNoWatchdogSecIsANoop(t *testing.T) {
	for name, env := range map[string][2]string{
		"no WatchdogSec":    {"", ""},
		"another process's": {"100000", strconv.Itoa(os.Getpid() + 1)},
	} {
		t.Run(name, func(t *testing.T) {
			c := notifySocket(t)
			t.Setenv("WATCHDOG_USEC", env[0])
			t.Setenv("WATCHDOG_PID", env[1])
			if err := New(Options{}).Run(t.Context(), health.NewRegistry("d", "v", nil)); err != nil {
				t.Fatal(err)
			}
			if got := recv(t, c, 50*time.Millisecond); got != "" {
				t.Fatalf("sent %q without a watchdog", got)
			}
		})
	}
	t.Run("bad WATCHDOG_USEC", func(t *testing.T) {
		notifySocket(t)
		t.Setenv("WATCHDOG_USEC", "soon")
		err := New(Options{}).Run(t.Context(), health.NewRegistry("d", "v", nil))
		if err == nil || !strings.Contains(err.Error(), `WATCHDOG_USEC "soon"`) {
			t.Fatalf("Run: %v", err)
		}
	})
}

// clock is the registry's fake time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logs hands log messages to the test.
type logs chan string

func (l logs) Enabled(context.Context, slog.Level) bool { return true }
func (l logs) Handle(_ context.Context, r slog.Record) error {
	select {
	case l <- r.Message:
	default:
	}
	return nil
}
func (l logs) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l logs) WithGroup(string) slog.Handler      { return l }

func awaitLog(t *testing.T, l logs, substr string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-l:
			if strings.Contains(m, substr) {
				return
			}
		case <-deadline:
			t.Fatalf("never logged %q", substr)
		}
	}
}

func TestPingsOnlyWhileLoopsBeat(t *testing.T) {
	c := notifySocket(t)
	// WatchdogSec=100ms as systemd would pass it: pings every 50ms.
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	const interval = 50 * time.Millisecond

	clk := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	reg := health.NewRegistry("ward3-gw", "test", clk.now)
	loop := reg.Loop("deliver/ehr")
	events := make(logs, 100)
	w := New(Options{Log: slog.New(events)})

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, reg) }()

	// Healthy: periodic pings.
	for range 3 {
		awaitMsg(t, c, "WATCHDOG=1")
	}

	// The loop hangs: its last beat ages past health.StallAge.
	clk.add(health.StallAge + time.Second)
	awaitLog(t, events, "watchdog pings stopped")
	// Everything sent before that decision is already queued on the
	// socket; drain it, then nothing more may come.
	var status string
	for m := recv(t, c, interval/5); m != ""; m = recv(t, c, interval/5) {
		if strings.HasPrefix(m, "STATUS=") {
			status = m
		}
	}
	if status != "STATUS=stalled: deliver/ehr" {
		t.Errorf("status %q, want the stalled loop named", status)
	}
	if m := recv(t, c, 8*interval); m != "" {
		t.Fatalf("systemd got %q for 8 intervals after the loop stalled, want silence", m)
	}

	// The loop recovers before systemd gives up: pings resume.
	loop.Beat()
	awaitMsg(t, c, "STATUS=running")
	awaitMsg(t, c, "WATCHDOG=1")
	awaitMsg(t, c, "WATCHDOG=1")

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop after cancel")
	}
}

func TestIntervalOverride(t *testing.T) {
	c := notifySocket(t) // no WATCHDOG_USEC: the override alone turns pings on
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- New(Options{Interval: 10 * time.Millisecond}).Run(ctx, health.NewRegistry("d", "v", nil))
	}()
	awaitMsg(t, c, "WATCHDOG=1")
	awaitMsg(t, c, "WATCHDOG=1")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
