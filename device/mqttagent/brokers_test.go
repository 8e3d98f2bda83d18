package mqttagent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/health"
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
		DeviceID: dev, Version: "child", Logger: log, Registry: reg,
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

// rmsg is one message seen by an observer or recorded by the broker.
type rmsg struct {
	client   string // recorder only
	topic    string
	payload  []byte
	retained bool
	will     bool // recorder only: sent by the broker as a Last Will
}

func (m rmsg) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(m.payload, &v); err != nil {
		t.Fatalf("payload on %s is not a JSON object: %v: %q", m.topic, err, m.payload)
	}
	return v
}

// msgLog collects messages and lets a test wait for one.
type msgLog struct {
	mu      sync.Mutex
	msgs    []rmsg
	changed chan struct{}
}

func newMsgLog() *msgLog { return &msgLog{changed: make(chan struct{})} }

func (l *msgLog) add(m rmsg) {
	l.mu.Lock()
	l.msgs = append(l.msgs, m)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *msgLog) all() []rmsg {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]rmsg(nil), l.msgs...)
}

func (l *msgLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.msgs)
}

// waitFor returns the index of the first message at or after from that
// matches, failing the test after waitLimit.
func (l *msgLog) waitFor(t *testing.T, from int, what string, match func(rmsg) bool) (int, rmsg) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for i := from; i < len(l.msgs); i++ {
			if match(l.msgs[i]) {
				m := l.msgs[i]
				l.mu.Unlock()
				return i, m
			}
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s; saw %d messages:\n%s", waitLimit, what, len(l.all()), dump(l.all()))
		}
	}
}

func dump(ms []rmsg) string {
	var b strings.Builder
	for _, m := range ms {
		p := string(m.payload)
		if len(p) > 200 {
			p = p[:200] + "…"
		}
		fmt.Fprintf(&b, "  %s retained=%v will=%v %s\n", m.topic, m.retained, m.will, p)
	}
	return b.String()
}

// isJSON matches a message on topic whose JSON holds every key/value in want.
func isJSON(t *testing.T, topic string, want map[string]any) func(rmsg) bool {
	return func(m rmsg) bool {
		if m.topic != topic {
			return false
		}
		var v map[string]any
		if json.Unmarshal(m.payload, &v) != nil {
			return false
		}
		for k, w := range want {
			if fmt.Sprint(v[k]) != fmt.Sprint(w) {
				return false
			}
		}
		return true
	}
}

// recorder is a mochi hook that records every PUBLISH the broker accepts
// and every Last Will it sends.
type recorder struct {
	mochi.HookBase
	log *msgLog
}

func (r *recorder) ID() string { return "recorder" }

func (r *recorder) Provides(b byte) bool { return b == mochi.OnPublished || b == mochi.OnWillSent }

func (r *recorder) OnPublished(cl *mochi.Client, pk packets.Packet) {
	r.log.add(rmsg{client: cl.ID, topic: pk.TopicName, payload: bytes.Clone(pk.Payload), retained: pk.FixedHeader.Retain})
}

func (r *recorder) OnWillSent(cl *mochi.Client, pk packets.Packet) {
	r.log.add(rmsg{client: cl.ID, topic: pk.TopicName, payload: bytes.Clone(pk.Payload), retained: pk.FixedHeader.Retain, will: true})
}

type mochiBroker struct {
	once sync.Once
	srv  *mochi.Server
	addr string
	url  string
	rec  *msgLog
}

type brokerOpts struct {
	addr   string      // default 127.0.0.1:0
	tls    *tls.Config // TLS listener when set
	ledger *auth.Ledger
}

// startMochi runs an in-process broker until the test ends (or close).
func startMochi(t *testing.T, o brokerOpts) *mochiBroker {
	t.Helper()
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler)})
	var err error
	if o.ledger != nil {
		err = srv.AddHook(new(auth.Hook), &auth.Options{Ledger: o.ledger})
	} else {
		err = srv.AddHook(new(auth.AllowHook), nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	rec := newMsgLog()
	if err := srv.AddHook(&recorder{log: rec}, nil); err != nil {
		t.Fatal(err)
	}
	if o.addr == "" {
		o.addr = "127.0.0.1:0"
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: o.addr, TLSConfig: o.tls})
	if err := srv.AddListener(l); err != nil {
		t.Fatalf("mochi listener on %s: %v", o.addr, err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	b := &mochiBroker{srv: srv, addr: l.Address(), rec: rec}
	scheme := "tcp"
	if o.tls != nil {
		scheme = "tls"
	}
	b.url = scheme + "://" + b.addr
	t.Cleanup(b.close)
	return b
}

// close stops the broker without ever hanging the package: mochi v2.7.9 can
// deadlock in Close when a client disconnects at the same moment
// (Clients.GetByListener takes its read lock twice; mochi-mqtt/server#488).
// Tests that stop the broker under a connected agent need exactly that
// moment, so Close gets a bounded wait and is left behind if stuck; the
// listener is closed first, so the port is free either way.
func (b *mochiBroker) close() {
	b.once.Do(func() {
		done := make(chan struct{})
		go func() {
			_ = b.srv.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	})
}

// freePort finds a port nobody listens on (for a broker started later).
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// mosquittoPath finds the broker; /usr/sbin is often not on a user's PATH.
func mosquittoPath() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// startMosquitto runs a real Mosquitto on a free loopback port until the test ends.
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin := mosquittoPath()
	if bin == "" {
		t.Skip("mosquitto is not installed (not on PATH, /usr/sbin or /usr/local/sbin)")
	}
	port := freePort(t)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n", port), 0o644); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("mosquitto output:\n%s", out.String())
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(waitLimit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return "tcp://" + addr
		}
		select {
		case <-exited:
			t.Fatalf("mosquitto exited at start:\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %s: %v\n%s", addr, err, out.String())
		}
	}
}

// observer is a separate real client that watches topics.
type observer struct {
	c   paho.Client
	log *msgLog
}

type observerOpts struct {
	tls        *tls.Config
	user, pass string
}

func newObserver(t *testing.T, url, filter string, o observerOpts) *observer {
	t.Helper()
	ob := &observer{log: newMsgLog()}
	opts := paho.NewClientOptions().AddBroker(url).
		SetClientID(fmt.Sprintf("observer-%d", time.Now().UnixNano())).
		SetOrderMatters(true).SetAutoReconnect(false).SetCleanSession(true).
		SetStore(paho.NewMemoryStore()).SetConnectTimeout(5 * time.Second)
	if o.tls != nil {
		opts.SetTLSConfig(o.tls)
	}
	if o.user != "" {
		opts.SetUsername(o.user).SetPassword(o.pass)
	}
	ob.c = paho.NewClient(opts)
	if tok := ob.c.Connect(); !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		t.Fatalf("observer connect to %s: %v", url, tok.Error())
	}
	t.Cleanup(ob.close)
	tok := ob.c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		ob.log.add(rmsg{topic: m.Topic(), payload: bytes.Clone(m.Payload()), retained: m.Retained()})
	})
	if !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		t.Fatalf("observer subscribe %s: %v", filter, tok.Error())
	}
	return ob
}

func (o *observer) close() {
	if o.c.IsConnected() {
		o.c.Disconnect(100)
	}
}

func (o *observer) publish(t *testing.T, topic string, retained bool, payload string) {
	t.Helper()
	tok := o.c.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
		t.Fatalf("observer publish %s: %v", topic, tok.Error())
	}
}

// syncBuffer is a goroutine-safe buffer for logs and process output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runner is an agent running in the test process.
type runner struct {
	a      *Agent
	reg    *health.Registry
	disp   *command.Dispatcher
	logs   *syncBuffer
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
	r := &runner{logs: &syncBuffer{}, done: make(chan error, 1)}
	r.reg = health.NewRegistry(s.device, "1.2.3", nil)
	r.disp = command.NewDispatcher(nil)
	log := slog.New(slog.NewTextHandler(io.MultiWriter(r.logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(cfg, Options{DeviceID: s.device, Version: "1.2.3", Logger: log, Registry: r.reg, Dispatcher: r.disp, SessionFile: s.sessionFile})
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
