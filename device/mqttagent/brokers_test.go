package mqttagent

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/logtest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// Environment of the child process that runs an agent until it is killed.
const (
	childBrokerEnv  = "HL7EDGE_MQTTAGENT_CHILD_BROKER"
	childDeviceEnv  = "HL7EDGE_MQTTAGENT_CHILD_DEVICE"
	childSessionEnv = "HL7EDGE_MQTTAGENT_CHILD_SESSION"
)

func TestMain(m *testing.M) {
	if os.Getenv(childBrokerEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// runChild runs a real agent in this process until its parent kills it (or
// closes our stdin, so an orphan never lingers).
func runChild() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	dev := os.Getenv(childDeviceEnv)
	reg := health.NewRegistry(dev, "child", nil)
	a, err := New(Config{Broker: os.Getenv(childBrokerEnv)}, Options{
		DeviceID: dev, Version: "child", Log: log, Registry: reg,
		Dispatcher: command.NewDispatcher(nil), SessionFile: os.Getenv(childSessionEnv),
	})
	if err != nil {
		log.Error("child agent", "err", err)
		return 2
	}
	tune(a)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	if err := a.Run(ctx); err != nil {
		log.Error("child agent", "err", err)
		return 1
	}
	return 0
}

// tune shortens the agent's waits so tests run fast.
func tune(a *Agent) {
	a.retryInterval = 100 * time.Millisecond
	a.maxReconnect = 300 * time.Millisecond
	a.connectTimeout = 2 * time.Second
	a.opTimeout = 5 * time.Second
	a.stopTimeout = 3 * time.Second
}

const waitLimit = 10 * time.Second

// runner is an agent running in the test process.
type runner struct {
	a      *Agent
	reg    *health.Registry
	disp   *command.Dispatcher
	logs   *logtest.Buffer
	cancel context.CancelFunc
	done   chan error
}

type agentSetup struct {
	device      string
	sessionFile string // default: a fresh temp file
	tweak       func(*Agent)
	register    func(*runner) // add components and commands before Run
}

func startAgent(t *testing.T, cfg Config, s agentSetup) *runner {
	t.Helper()
	r := newAgent(t, cfg, s)
	r.start(t)
	return r
}

func newAgent(t *testing.T, cfg Config, s agentSetup) *runner {
	t.Helper()
	if s.device == "" {
		s.device = "gw1"
	}
	if s.sessionFile == "" {
		s.sessionFile = filepath.Join(t.TempDir(), "mqtt.session")
	}
	r := &runner{logs: &logtest.Buffer{}, done: make(chan error, 1)}
	r.reg = health.NewRegistry(s.device, "1.2.3", nil)
	r.disp = command.NewDispatcher(nil)
	log := slog.New(slog.NewTextHandler(io.MultiWriter(r.logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(cfg, Options{DeviceID: s.device, Version: "1.2.3", Labels: map[string]string{"site": "north"}, Log: log, Registry: r.reg, Dispatcher: r.disp, SessionFile: s.sessionFile})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tune(a)
	if s.tweak != nil {
		s.tweak(a)
	}
	r.a = a
	if s.register != nil {
		s.register(r)
	}
	return r
}

func (r *runner) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(waitLimit):
			t.Errorf("agent Run did not return within %s of cancel", waitLimit)
		}
	})
}

// stop cancels Run and waits for it to return.
func (r *runner) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(waitLimit):
		t.Fatalf("Run did not return within %s of cancel", waitLimit)
	}
}

// waitState polls the agent's own health component.
func (r *runner) waitState(t *testing.T, want health.State) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for r.a.comp.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("mqtt component is %s, want %s; logs:\n%s", r.a.comp.State(), want, r.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
