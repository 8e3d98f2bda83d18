// Package fleetsim runs N gateways' real MQTT agents in one process against
// a real broker, for tests and benchmarks of the fleet view: each has its
// own session, birth, Last Will and health, built from a health registry in
// the state its Spec asks for. Gateways can go offline cleanly (retained
// "offline") or be cut off (their connection dropped, so the broker
// publishes their Last Will).
package fleetsim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"time"

	"github.com/hl7edge/hl7edge/device/frontpanel"
	"github.com/hl7edge/hl7edge/device/mqttagent"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// Offline is how a simulated gateway leaves.
type Offline int

// Ways to leave.
const (
	StayOnline Offline = iota
	CleanStop          // the agent stops: retained "offline" from the box
	Cut                // the TCP connection is dropped: the broker's Last Will
)

// Spec is one simulated gateway.
type Spec struct {
	ID      string
	Version string
	Fault   frontpanel.Fault // the condition behind this fault code is built into its health
	Queued  int64            // messages waiting for its destination
	Alarm   string           // an active alarm kind, "" for none
	Offline Offline
	Labels  map[string]string // device.labels
	Answer  Answer            // how it treats commands
	// TrustKeys are minisign public keys (trust.keys): with them the
	// gateway obeys signed commands made for it, as a daemon does.
	TrustKeys []string
	// FirmwareFail makes a firmware-update (signed, with TrustKeys) roll
	// back at the end of its trial instead of committing.
	FirmwareFail bool
	// Trial is how long a new version is on trial; 0 means SimTrial.
	Trial time.Duration
	// Username and PasswordFile are its broker credential (mqtt.username,
	// mqtt.password_file); empty for an anonymous broker.
	Username, PasswordFile string
}

// Gateway is one running simulated gateway.
type Gateway struct {
	Spec   Spec
	agent  *mqttagent.Agent
	fw     firmwareSim
	reg    *health.Registry
	cancel context.CancelFunc
	done   chan struct{}
	proxy  *proxy // only for Cut
}

// Fleet is the running simulation.
type Fleet struct {
	Gateways []*Gateway
}

// Start starts one agent per spec against broker (tcp://host:port) and
// returns once each has been started; use an observer to know when their
// births and health have reached the broker. dir holds session files.
func Start(ctx context.Context, broker, dir string, specs []Spec) (*Fleet, error) {
	u, err := url.Parse(broker)
	if err != nil || u.Scheme != "tcp" {
		return nil, fmt.Errorf("fleetsim: broker %q: want tcp://host:port", broker)
	}
	f := &Fleet{}
	for _, sp := range specs {
		g, err := start(ctx, u.Host, dir, sp)
		if err != nil {
			f.Stop()
			return nil, err
		}
		f.Gateways = append(f.Gateways, g)
	}
	return f, nil
}

func start(ctx context.Context, brokerAddr, dir string, sp Spec) (*Gateway, error) {
	reg := health.NewRegistry(sp.ID, sp.Version, nil)
	reg.SetLabels(sp.Labels)
	reg.SetClockProbe(func() bool { return sp.Fault != frontpanel.FaultClockTLS })
	src := reg.Component(health.Source, "monitors", "mllp")
	src.SetState(health.Up)
	dst := reg.Component(health.Destination, "ehr", "webservice")
	dst.MarkUpstream()
	dst.SetState(health.Up)
	spool := health.SpoolSnapshot{Messages: sp.Queued, Bytes: sp.Queued * 1024, MaxBytes: 2 << 30, FreeDiskBytes: 20 << 30,
		Queues: map[string]health.QueueStat{"ehr": {Queued: sp.Queued}}}
	if sp.Queued > 0 {
		spool.Queues["ehr"] = health.QueueStat{Queued: sp.Queued, OldestAgeSeconds: float64(sp.Queued)}
	}
	switch sp.Fault {
	case frontpanel.FaultSpoolFull:
		spool.Bytes = spool.MaxBytes / 100 * 95
	case frontpanel.FaultUpstreamRefusing:
		dst.Add(health.CounterExceptions, 1)
		dst.Fail(health.Down, "ping: web service EXCEPTION 3267: Invalid logon id")
	case frontpanel.FaultDeviceMissing:
		reg.Component(health.Source, "analyzer", "serial").Fail(health.Missing, "serial device missing: /dev/ttyUSB0 does not exist")
	case frontpanel.FaultStorage:
		spool.Error = "spool write failed: input/output error"
	}
	if sp.Alarm == health.AlarmDeadLetter {
		// dead_letter lasts only while a dead letter does: a box raising
		// it holds one.
		q := spool.Queues["ehr"]
		q.Dead = 1
		spool.Queues["ehr"] = q
	}
	reg.SetSpoolProbe(func() health.SpoolSnapshot { return spool })
	if sp.Alarm != "" {
		reg.RaiseAlarm(sp.Alarm, "simulated")
	}

	g := &Gateway{Spec: sp, reg: reg, done: make(chan struct{})}
	addr := brokerAddr
	if sp.Offline == Cut {
		p, err := newProxy(brokerAddr)
		if err != nil {
			return nil, err
		}
		g.proxy = p
		addr = p.addr()
	}
	opts := mqttagent.Options{
		DeviceID: sp.ID, Version: sp.Version, Labels: sp.Labels, Registry: reg, Dispatcher: g.dispatcher(reg),
		SessionFile: filepath.Join(dir, sp.ID+".session"), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if len(sp.TrustKeys) > 0 {
		keys, err := trust.ParseKeys(sp.TrustKeys)
		if err != nil {
			g.closeProxy()
			return nil, fmt.Errorf("fleetsim %s: %w", sp.ID, err)
		}
		tg := trust.NewGate(keys, sp.ID, filepath.Join(dir, sp.ID+".signed-commands.json"), nil, nil)
		opts.Signed, opts.Forget = tg.Open, tg.Forget
	}
	agent, err := mqttagent.New(mqttagent.Config{Broker: "tcp://" + addr, HealthInterval: units.Duration(time.Hour),
		Username: sp.Username, PasswordFile: sp.PasswordFile}, opts)
	if err != nil {
		g.closeProxy()
		return nil, fmt.Errorf("fleetsim %s: %w", sp.ID, err)
	}
	actx, cancel := context.WithCancel(ctx)
	g.cancel = cancel
	g.agent = agent
	g.fw.ctx = actx
	go func() {
		defer close(g.done)
		_ = agent.Run(actx)
		g.fw.wg.Wait()
	}()
	return g, nil
}

// Leave takes every gateway whose Spec says so offline, each its way.
func (f *Fleet) Leave() {
	var wg sync.WaitGroup
	for _, g := range f.Gateways {
		switch g.Spec.Offline {
		case CleanStop:
			wg.Go(func() { g.cancel(); <-g.done })
		case Cut:
			g.proxy.cut()
		}
	}
	wg.Wait()
}

// Stop ends every agent (cleanly, so they publish offline) and waits.
func (f *Fleet) Stop() {
	var wg sync.WaitGroup
	for _, g := range f.Gateways {
		wg.Go(func() {
			g.closeProxy()
			g.cancel()
			<-g.done
		})
	}
	wg.Wait()
}

func (g *Gateway) closeProxy() {
	if g.proxy != nil {
		g.proxy.cut()
	}
}

// proxy forwards one gateway's TCP connections to the broker until cut;
// after that it refuses new ones, as a box whose network is gone.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
	cutD  bool
}

func newProxy(target string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fleetsim proxy: %w", err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	return p, nil
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		if p.cutD {
			p.mu.Unlock()
			_ = c.Close()
			_ = up.Close()
			return
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Go(func() { _, _ = io.Copy(up, c); _ = up.Close() })
		p.wg.Go(func() { _, _ = io.Copy(c, up); _ = c.Close() })
	}
}

// cut drops every connection without an MQTT DISCONNECT, so the broker
// publishes the Last Will, and refuses new ones. It waits for the proxy's
// goroutines.
func (p *proxy) cut() {
	p.mu.Lock()
	if p.cutD {
		p.mu.Unlock()
		return
	}
	p.cutD = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	p.wg.Wait()
}
