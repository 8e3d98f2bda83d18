// Package mqttagent connects the box to its fleet over MQTT: a retained
// online/offline status with a session counter (and the same topic as Last
// Will), periodic and on-change health snapshots (retained, so a fleet view
// reads the latest of every box, offline ones included, in one subscription
// without asking each box), alarms, and operator
// commands answered through the shared command.Dispatcher. While the broker
// is unreachable it keeps only bounded state (the latest health, the last
// alarms and command answers) and publishes it when the link returns.
//
// Nothing published carries patient data: health snapshots and command
// results hold none by contract, and the agent never echoes a command's raw
// content back.
package mqttagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/ratelog"
	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// Options are the agent's collaborators.
type Options struct {
	DeviceID string
	Version  string
	// Labels (device.labels) ride in the birth, so that a fleet tool knows
	// them from the retained status before the first health.
	Labels     map[string]string
	Log        *slog.Logger        // nil: discard
	Registry   *health.Registry    // required when enabled
	Dispatcher *command.Dispatcher // required when enabled
	// SessionFile holds the session counter; it is incremented by New.
	// Required when enabled (e.g. /var/lib/hl7edge/mqtt.session).
	SessionFile string
	// Gates are the disk sync gates the session file's writes go through,
	// the spool's beside it (storage/syncgate); nil: the file's own syncs.
	Gates *syncgate.Gates
	Now   func() time.Time // nil: time.Now
	// Signed opens a signed command envelope (device/trust's Gate.Open).
	// nil when the gateway has no trust keys: privileged commands are then
	// refused over MQTT and obeyed only on the local admin socket.
	Signed func(payload []byte) (req command.Request, signer string, err error)
	// Forget gives back the id Signed recorded for a command that then did
	// not run (refused, the queue full, the agent stopping), so that the
	// same envelope may be sent again as the answer says (device/trust's
	// Gate.Forget). nil: such an id stays used.
	Forget func(id string) error
	// Throttle bounds how often unsigned disruptive commands run (restart);
	// nil: no bound. Its refusals so far are counted in this agent's health
	// from the start, so the count survives pipeline restarts.
	Throttle *command.Throttle
}

// Agent is the MQTT link of one box. Make it with New, run it with Run.
type Agent struct {
	cfg      Config
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	enabled  bool
	session  uint64
	password string
	clientID string
	topics   topics
	comp     *health.Component
	out      *outbox
	cmdLog   *slog.Logger // a.log rate-limited: what a command flood can make it write
	started  atomic.Bool

	// Tuning; tests shorten the waits.
	retryInterval  time.Duration // between first-connect attempts
	maxReconnect   time.Duration // longest back-off between reconnect attempts
	connectTimeout time.Duration
	opTimeout      time.Duration // wait for a publish or subscribe acknowledgement
	stopTimeout    time.Duration // budget for the last flush and the offline status
	debounce       time.Duration // least time between two health publications on change
	maxStuck       int           // unacknowledged publishes left inside the client before we hold back

	// statusMu orders birth and offline so a late reconnect can never leave
	// a retained "online" after the clean-stop "offline".
	statusMu sync.Mutex
	stopping bool
	closing  atomic.Bool // stopping, for handlers that must not take statusMu

	// cmdMu orders a command's "accepted" before its final answer, and
	// closes the queue when the worker ends.
	cmdMu     sync.Mutex
	cmdClosed bool
	cmdQ      chan queued

	// handlers are the goroutines paho starts for each command (the client
	// does not order them, so it does not wait for them either). Run waits
	// for them: one that opens a signed command records its id in the
	// replay record, and must be done before the next box reads the record
	// anew (or its stale copy would replace the next box's ids).
	handlerMu      sync.Mutex
	handlersClosed bool
	handlers       sync.WaitGroup

	stuckMu sync.Mutex
	stuck   []mqtt.Token

	failMu   sync.Mutex
	lastFail string // last connect failure reason, to log each reason once
}

type topics struct {
	status, health, alarm, cmdReq, cmdRes string
}

// Defaults for the bounded buffers.
const (
	AlarmBuffer    = 100 // alarms kept while the broker is unreachable
	ResponseBuffer = 32  // command answers kept while the broker is unreachable
	CommandQueue   = 8   // commands waiting for the worker before "busy"
)

// New checks the configuration, reads the password, and increments the
// session counter. With no broker configured it returns a disabled agent
// whose Run just waits and whose Alarm does nothing. Either way it
// registers the "health" command (unless one is registered already) so the
// admin socket has it too.
func New(cfg Config, opts Options) (*Agent, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{
		cfg: cfg, opts: opts, log: opts.Log, now: opts.Now, enabled: cfg.Enabled(),
		retryInterval: 3 * time.Second, maxReconnect: 30 * time.Second, connectTimeout: 10 * time.Second,
		opTimeout: 10 * time.Second, stopTimeout: 5 * time.Second, debounce: time.Second, maxStuck: 16,
		out:  newOutbox(AlarmBuffer, ResponseBuffer),
		cmdQ: make(chan queued, CommandQueue),
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("component", "mqtt")
	a.cmdLog = ratelog.Logger(a.log, time.Second, cmdLogBurst)
	if a.now == nil {
		a.now = time.Now
	}
	if !a.enabled {
		a.registerHealth()
		return a, nil
	}
	if err := validDeviceID(opts.DeviceID); err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	if opts.Registry == nil || opts.Dispatcher == nil {
		return nil, errors.New("mqtt: Options.Registry and Options.Dispatcher are required when mqtt.broker is set")
	}
	if opts.SessionFile == "" {
		return nil, errors.New("mqtt: Options.SessionFile is empty; the session counter needs a file that survives restarts")
	}
	if cfg.PasswordFile != "" {
		p, err := readPassword(cfg.PasswordFile)
		if err != nil {
			return nil, err
		}
		a.password = p
	}
	if cfg.isTLS() {
		if _, err := cfg.tlsConfig(); err != nil { // fail now rather than at every connect
			return nil, err
		}
	} else if a.password != "" {
		a.log.Warn("mqtt password is sent without TLS; use tls:// or wss:// for mqtt.broker", "broker", cfg.Broker)
	}
	a.clientID = cfg.ClientID
	if a.clientID == "" {
		a.clientID = "hl7edge-" + opts.DeviceID
	}
	base := cfg.TopicRoot + "/" + opts.DeviceID + "/"
	a.topics = topics{status: base + "status", health: base + "health", alarm: base + "alarm", cmdReq: base + "cmd/req", cmdRes: base + "cmd/res"}
	s, err := nextSession(opts.Gates, opts.SessionFile)
	if err != nil {
		return nil, err
	}
	a.session = s
	a.comp = opts.Registry.Component(health.Service, "mqtt", "mqtt")
	a.comp.Add(health.CounterCommandsThrottled, opts.Throttle.Refused())
	// Drops are counted as they happen, so a flood shows while it lasts.
	a.out.onDrop = func(k kind) {
		if k == kindAlarm {
			a.comp.Add(health.CounterAlarmsDropped, 1)
		} else {
			a.comp.Add(health.CounterResponsesDropped, 1)
		}
	}
	a.registerHealth()
	return a, nil
}

// registerHealth adds the "health" command unless the integrator has one.
func (a *Agent) registerHealth() {
	d, reg := a.opts.Dispatcher, a.opts.Registry
	if d == nil || reg == nil || registered(d, command.Health) {
		return
	}
	d.Register(command.Health, func(context.Context, json.RawMessage) (any, string, error) {
		return reg.Snapshot(), "", nil
	})
}

func registered(d *command.Dispatcher, name string) bool {
	for _, n := range d.Names() {
		if n == name {
			return true
		}
	}
	return false
}

// Enabled says whether a broker is configured.
func (a *Agent) Enabled() bool { return a != nil && a.enabled }

// Session is this run's session counter (0 when disabled).
func (a *Agent) Session() uint64 {
	if a == nil {
		return 0
	}
	return a.session
}

// StatusTopic is where the retained online/offline status goes ("" when disabled).
func (a *Agent) StatusTopic() string {
	if a == nil {
		return ""
	}
	return a.topics.status
}

type statusMsg struct {
	State   string            `json:"state"`
	Session uint64            `json:"session"`
	Version string            `json:"version,omitempty"`
	Time    string            `json:"time,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
}

func (a *Agent) offlinePayload() []byte {
	b, _ := json.Marshal(statusMsg{State: "offline", Session: a.session})
	return b
}

func (a *Agent) clientOptions() (*mqtt.ClientOptions, error) {
	o := mqtt.NewClientOptions().
		AddBroker(a.cfg.Broker).
		SetClientID(a.clientID).
		SetProtocolVersion(4). // MQTT 3.1.1, no silent fallback to 3.1
		SetCleanSession(true). // commands sent while we were away are stale; expiry alone is not enough
		SetStore(mqtt.NewMemoryStore()).
		SetOrderMatters(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(a.retryInterval).
		SetMaxReconnectInterval(a.maxReconnect).
		SetConnectTimeout(a.connectTimeout).
		SetWriteTimeout(a.opTimeout).
		SetKeepAlive(a.cfg.KeepAlive.D()).
		SetBinaryWill(a.topics.status, a.offlinePayload(), 1, true).
		SetOnConnectHandler(a.onConnect).
		SetConnectionLostHandler(a.onConnectionLost).
		SetConnectionNotificationHandler(a.onNotification)
	if a.cfg.Username != "" {
		o.SetUsername(a.cfg.Username)
		o.SetPassword(a.password)
	}
	if a.cfg.isTLS() {
		t, err := a.cfg.tlsConfig()
		if err != nil {
			return nil, err
		}
		o.SetTLSConfig(t)
	}
	return o, nil
}

// Run connects (retrying while the broker is unreachable) and serves until
// ctx ends; then it answers queued commands, flushes what it can, publishes
// the retained offline status and disconnects. It returns once every
// goroutine it started has ended, and every command paho handed it (a
// signed one may be waiting to record its id). With the broker down,
// stopping waits for the current connection attempt (at most about 13 s,
// usually at once). One exception it cannot wait for: when the link was
// lost and paho is sleeping between reconnect attempts, that paho
// goroutine outlives Run by up to 30 s; it then finds the client
// disconnected and ends (the agent's handlers ignore anything it reports
// after stop).
func (a *Agent) Run(ctx context.Context) error {
	if !a.enabled {
		<-ctx.Done()
		return nil
	}
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("mqtt: Run called twice on one Agent; make a new Agent")
	}
	opts, err := a.clientOptions()
	if err != nil {
		return err
	}
	client := mqtt.NewClient(opts)
	a.log.Info("mqtt agent starting", "broker", a.cfg.Broker, "client_id", a.clientID, "session", a.session)

	workCtx, cancelWork := context.WithCancel(ctx)
	defer cancelWork()
	pubCtx, cancelPub := context.WithCancel(context.Background())
	defer cancelPub()

	var workers sync.WaitGroup
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		a.publishLoop(pubCtx, client)
	}()
	workers.Go(func() { a.healthLoop(workCtx) })
	workers.Go(func() { a.commandWorker(workCtx) })

	// With ConnectRetry the token completes only once connected (or at
	// Disconnect); watch it to report a failure that ends the attempts.
	tok := client.Connect()
	workers.Go(func() {
		select {
		case <-tok.Done():
			if err := tok.Error(); err != nil && workCtx.Err() == nil {
				a.log.Error("mqtt connect gave up", "err", err)
			}
		case <-workCtx.Done():
		}
	})

	<-ctx.Done()
	cancelWork()
	workers.Wait() // the worker has answered every queued command by now
	cancelPub()
	<-pubDone

	a.statusMu.Lock()
	a.stopping = true
	a.closing.Store(true)
	if client.IsConnectionOpen() {
		t := client.Publish(a.topics.status, 1, true, a.offlinePayload())
		switch {
		case !t.WaitTimeout(a.stopTimeout):
			a.log.Warn("mqtt offline status not acknowledged in time; the broker will publish the Last Will instead", "timeout", a.stopTimeout)
		case t.Error() != nil:
			a.log.Warn("mqtt offline status not published; the broker will publish the Last Will instead", "err", t.Error())
		default:
			a.log.Info("mqtt offline status published", "session", a.session)
		}
	} else {
		a.log.Info("mqtt not connected at stop; the broker has published (or will publish) the Last Will")
	}
	a.statusMu.Unlock()
	client.Disconnect(250)
	a.waitHandlers()
	// If it never connected, paho's connect goroutine ends only after its
	// current attempt and retry sleep; the token completes when it has.
	select {
	case <-tok.Done():
	case <-time.After(a.retryInterval + a.connectTimeout + time.Second):
		a.log.Warn("mqtt connect attempt still running after stop")
	}
	a.comp.SetState(health.Stopped)
	if al, rs := a.out.dropped(); al+rs > 0 {
		a.log.Warn("mqtt buffers overflowed during this run", "alarms_dropped", al, "responses_dropped", rs)
	}
	return nil
}

// onConnect runs on every (re)connect, in its own goroutine (paho starts it).
func (a *Agent) onConnect(c mqtt.Client) {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	if a.stopping {
		return
	}
	// Subscribe first so that "online" means commands are heard.
	a.subscribeCommands(c)
	b, _ := json.Marshal(statusMsg{State: "online", Session: a.session, Version: a.opts.Version, Time: a.now().UTC().Format(time.RFC3339), Labels: a.opts.Labels})
	p := c.Publish(a.topics.status, 1, true, b)
	switch {
	case !p.WaitTimeout(a.opTimeout):
		a.log.Warn("mqtt online status not acknowledged in time", "topic", a.topics.status)
	case p.Error() != nil:
		a.log.Warn("mqtt online status not published", "err", p.Error())
	}
	a.failMu.Lock()
	a.lastFail = ""
	a.failMu.Unlock()
	a.log.Info("mqtt connected", "broker", a.cfg.Broker, "session", a.session)
	a.comp.SetState(health.Up)
	a.out.signal()
}

// subscribeTries bounds how often a refused subscription to commands is
// asked again, after pauses of 100 ms doubling (1.5 s in all). A refusal
// can pass: mochi refuses a SUBSCRIBE whose packet id is one of its own
// unacknowledged deliveries to the client (0x91), and a new SUBSCRIBE has a
// new id. An ACL's refusal stays, and is logged.
const subscribeTries = 5

// subscribeCommands subscribes to the command topic and checks the grant:
// paho reports a refused subscription only in the SUBACK's return code,
// never as an error, and a box that cannot hear commands must say so.
func (a *Agent) subscribeCommands(c mqtt.Client) {
	for try := range subscribeTries {
		if try > 0 {
			time.Sleep(100 * time.Millisecond << (try - 1))
		}
		t := c.Subscribe(a.topics.cmdReq, 1, a.onCommand)
		switch {
		case !t.WaitTimeout(a.opTimeout):
			a.log.Error("mqtt subscribe to commands not acknowledged in time; commands will not be heard until the next reconnect", "topic", a.topics.cmdReq)
			return
		case t.Error() != nil:
			a.log.Error("mqtt subscribe to commands failed", "topic", a.topics.cmdReq, "err", t.Error())
			return
		}
		st, ok := t.(*mqtt.SubscribeToken)
		if !ok {
			return
		}
		if code := st.Result()[a.topics.cmdReq]; code <= 2 {
			return
		} else if try == subscribeTries-1 {
			a.log.Error("broker refused the subscription to commands; commands will not be heard until the next reconnect: allow this client to subscribe in the broker's ACL",
				"topic", a.topics.cmdReq, "return_code", fmt.Sprintf("%#x", code), "tries", subscribeTries)
		}
	}
}

func (a *Agent) onConnectionLost(_ mqtt.Client, err error) {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	if a.stopping {
		return
	}
	a.log.Warn("mqtt connection lost; reconnecting", "err", err)
	a.comp.Fail(health.Down, "mqtt connection lost")
}

// onNotification reports failed connection attempts; it runs inside paho's
// connect loop, so it only logs and records. A reason is logged as a warning
// once, then at debug level while it repeats, so a long outage does not
// fill the log.
func (a *Agent) onNotification(_ mqtt.Client, n mqtt.ConnectionNotification) {
	f, ok := n.(mqtt.ConnectionNotificationFailed)
	if !ok || f.Reason == nil || a.closing.Load() {
		return
	}
	reason := f.Reason.Error()
	a.failMu.Lock()
	repeated := reason == a.lastFail
	a.lastFail = reason
	a.failMu.Unlock()
	level := slog.LevelWarn
	if repeated {
		level = slog.LevelDebug
	}
	a.log.Log(context.Background(), level, "mqtt connect failed; retrying", "broker", a.cfg.Broker, "err", reason)
	if health.IsTLSFailure(f.Reason) {
		a.comp.Add(health.CounterTLSErrors, 1) // FAULT code 4: a certificate or CA file to fix
	}
	a.comp.Fail(health.Down, clip("mqtt connect failed: "+reason, 256))
}

// Alarm queues an alarm event; it never blocks. kind and detail must hold
// no patient data (control IDs and GUIDs are fine).
func (a *Agent) Alarm(kind, detail string) {
	if !a.Enabled() {
		return
	}
	b, err := json.Marshal(struct {
		Time   string `json:"time"`
		Kind   string `json:"kind"`
		Detail string `json:"detail,omitempty"`
	}{a.now().UTC().Format(time.RFC3339Nano), clip(kind, 64), clip(detail, 1024)})
	if err != nil {
		return
	}
	a.out.put(outMsg{topic: a.topics.alarm, payload: b, kind: kindAlarm})
}

// Retain publishes payload retained on <topic root>/<device>/<sub>; while
// the broker is unreachable only the latest payload per topic is kept. It
// never blocks.
func (a *Agent) Retain(sub string, payload []byte) {
	if !a.Enabled() {
		return
	}
	a.out.put(outMsg{topic: a.cfg.TopicRoot + "/" + a.opts.DeviceID + "/" + sub, payload: payload, retained: true, kind: kindState})
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// publishLoop is the only goroutine that publishes from the outbox, so the
// client never holds more than a few of our messages at once.
func (a *Agent) publishLoop(ctx context.Context, c mqtt.Client) {
	for {
		select {
		case <-ctx.Done():
			// Last chance for answers and alarms queued while stopping.
			a.flush(c, time.Now().Add(a.stopTimeout/2))
			return
		case <-a.out.wake:
			a.flush(c, time.Time{})
		}
	}
}

// flush publishes from the outbox while the connection is open; with a
// non-zero deadline it stops there.
func (a *Agent) flush(c mqtt.Client, deadline time.Time) {
	for {
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return
		}
		if !c.IsConnectionOpen() || !a.roomInClient() {
			return // keep it here; OnConnect wakes us
		}
		m, ok := a.out.pop()
		if !ok {
			return
		}
		if m.kind == kindHealth {
			b, err := json.Marshal(a.opts.Registry.Snapshot())
			if err != nil {
				a.log.Error("health snapshot does not encode as JSON", "err", err)
				continue
			}
			m.payload = b
		}
		wait := a.opTimeout
		if !deadline.IsZero() {
			wait = min(wait, time.Until(deadline))
		}
		t := c.Publish(m.topic, 1, m.retained, m.payload)
		switch {
		case !t.WaitTimeout(wait):
			// The client keeps it and resends it after a reconnect; hold
			// back further publishes while too many are outstanding.
			a.addStuck(t)
			a.log.Warn("mqtt publish not acknowledged in time; left to the client to resend", "topic", m.topic)
		case errors.Is(t.Error(), mqtt.ErrNotConnected):
			a.out.requeue(m)
			return
		case t.Error() != nil:
			a.log.Warn("mqtt publish failed", "topic", m.topic, "err", t.Error())
		}
	}
}

func (a *Agent) addStuck(t mqtt.Token) {
	a.stuckMu.Lock()
	a.stuck = append(a.stuck, t)
	a.stuckMu.Unlock()
}

// roomInClient forgets completed tokens and says whether fewer than
// maxStuck unacknowledged publishes remain inside the client.
func (a *Agent) roomInClient() bool {
	a.stuckMu.Lock()
	defer a.stuckMu.Unlock()
	kept := a.stuck[:0]
	for _, t := range a.stuck {
		select {
		case <-t.Done():
		default:
			kept = append(kept, t)
		}
	}
	clear(a.stuck[len(kept):])
	a.stuck = kept
	return len(a.stuck) < a.maxStuck
}

// healthLoop marks health due at start, every health_interval, after a
// state change (at most one per debounce period, so a flapping component
// cannot flood the broker) and at a clean stop.
func (a *Agent) healthLoop(ctx context.Context) {
	changed, unsubscribe := a.opts.Registry.Subscribe()
	defer unsubscribe()
	tick := time.NewTicker(a.cfg.HealthInterval.D())
	defer tick.Stop()
	var last time.Time
	var hold *time.Timer
	var holdC <-chan time.Time
	defer func() {
		if hold != nil {
			hold.Stop()
		}
	}()
	queue := func() {
		last = time.Now()
		a.out.put(outMsg{topic: a.topics.health, kind: kindHealth})
	}
	queue()
	for {
		select {
		case <-ctx.Done():
			// A clean stop leaves the health of the moment, retained, before
			// the offline status: queue counts change without a state change,
			// so the last periodic snapshot can be up to health_interval
			// stale. The snapshot is taken when the final flush publishes it.
			queue()
			return
		case <-tick.C:
			queue()
		case <-changed:
			if holdC != nil {
				continue // already scheduled
			}
			if wait := a.debounce - time.Since(last); wait > 0 {
				hold = time.NewTimer(wait)
				holdC = hold.C
				continue
			}
			queue()
		case <-holdC:
			holdC = nil
			queue()
		}
	}
}
