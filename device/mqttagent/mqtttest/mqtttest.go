// Package mqtttest runs real MQTT brokers and clients for tests: an
// in-process mochi-mqtt broker that records every PUBLISH it accepts, a
// Mosquitto process when one is installed, and a paho client that records
// what it is sent. Every wait is bounded and everything started stops when
// the test ends. Only tests import it.
package mqtttest

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
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

	"github.com/hl7edge/hl7edge/build/freeport"
	"github.com/hl7edge/hl7edge/build/skipnote"
	"github.com/hl7edge/hl7edge/pipeline/logtest"
)

// WaitLimit bounds every wait in this package; generous because the
// machines are shared and the tests run with -race.
const WaitLimit = 20 * time.Second

// closeLimit bounds how long a broker's close waits for its clients to leave
// and then for mochi's Close.
const closeLimit = 5 * time.Second

// ---------------------------------------------------------------------------
// Messages.

// Message is one PUBLISH seen by a Client or recorded by a Broker.
type Message struct {
	Client   string // the publisher's client ID; set by a Broker only
	Topic    string
	Payload  []byte
	Retained bool
	Will     bool // a Last Will the broker sent; set by a Broker only
}

// JSON decodes the payload as a JSON object, failing the test when it is not one.
func (m Message) JSON(t testing.TB) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(m.Payload, &v); err != nil {
		t.Fatalf("payload on %s is not a JSON object: %v: %q", m.Topic, err, m.Payload)
	}
	return v
}

// JSONHas matches a message on topic whose JSON object holds every key and
// value in want (compared as fmt.Sprint strings, so 7 matches 7.0).
func JSONHas(topic string, want map[string]any) func(Message) bool {
	return func(m Message) bool {
		if m.Topic != topic {
			return false
		}
		var v map[string]any
		if json.Unmarshal(m.Payload, &v) != nil {
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

// Log collects messages in arrival order and lets a test wait for one.
type Log struct {
	mu      sync.Mutex
	msgs    []Message
	changed chan struct{} // closed and replaced on every Add
}

// NewLog returns an empty Log.
func NewLog() *Log { return &Log{changed: make(chan struct{})} }

// Add appends m and wakes every waiter.
func (l *Log) Add(m Message) {
	l.mu.Lock()
	l.msgs = append(l.msgs, m)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// All returns a copy of every message so far.
func (l *Log) All() []Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Message(nil), l.msgs...)
}

// Mark returns the index the next message will have, to wait only for
// messages that come after it.
func (l *Log) Mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.msgs)
}

// WaitFor returns the index of the first message at or after from that
// matches, failing the test after WaitLimit with every message seen.
func (l *Log) WaitFor(t testing.TB, from int, what string, match func(Message) bool) (int, Message) {
	t.Helper()
	deadline := time.NewTimer(WaitLimit)
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
			all := l.All()
			t.Fatalf("timed out after %s waiting for %s; saw %d messages:\n%s", WaitLimit, what, len(all), dump(all))
		}
	}
}

func dump(ms []Message) string {
	var b strings.Builder
	for _, m := range ms {
		p := string(m.Payload)
		if len(p) > 300 {
			p = p[:300] + "…"
		}
		fmt.Fprintf(&b, "  %s retained=%v will=%v %s\n", m.Topic, m.Retained, m.Will, p)
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// The in-process broker.

// recorder is a mochi hook that records every PUBLISH the broker accepts,
// from any client, and every Last Will it sends.
type recorder struct {
	mochi.HookBase
	log *Log
}

func (r *recorder) ID() string { return "mqtttest-recorder" }

func (r *recorder) Provides(b byte) bool { return b == mochi.OnPublished || b == mochi.OnWillSent }

func (r *recorder) OnPublished(cl *mochi.Client, pk packets.Packet) {
	r.log.Add(Message{Client: cl.ID, Topic: pk.TopicName, Payload: bytes.Clone(pk.Payload), Retained: pk.FixedHeader.Retain})
}

func (r *recorder) OnWillSent(cl *mochi.Client, pk packets.Packet) {
	r.log.Add(Message{Client: cl.ID, Topic: pk.TopicName, Payload: bytes.Clone(pk.Payload), Retained: pk.FixedHeader.Retain, Will: true})
}

// BrokerOptions shape a mochi broker; the zero value is a plain TCP broker
// on a free loopback port that lets everyone in.
type BrokerOptions struct {
	Addr   string       // listen address; default 127.0.0.1:0
	TLS    *tls.Config  // a TLS listener (URL scheme tls://) when set
	Ledger *auth.Ledger // user names and passwords; default: allow all
	// Refuse, when set (and Ledger is not), lets every client in and
	// refuses what it says: a subscription (write false) or a publish to
	// topic by client. A broker's ACL refuses a subscription in the SUBACK's
	// return code, which paho does not report as an error.
	Refuse func(client, topic string, write bool) bool
}

// RefuseSubscriptions is a BrokerOptions.Refuse that refuses the first n
// subscriptions to filter (n < 0: every one), as a broker's ACL does, or
// as mochi does with a SUBSCRIBE whose packet id is one of its own
// unacknowledged deliveries to that client (return code 0x91).
func RefuseSubscriptions(filter string, n int) func(client, topic string, write bool) bool {
	var mu sync.Mutex
	return func(_, topic string, write bool) bool {
		if write || topic != filter {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if n == 0 {
			return false
		}
		if n > 0 {
			n--
		}
		return true
	}
}

// refuseHook is BrokerOptions.Refuse as a mochi hook.
type refuseHook struct {
	mochi.HookBase
	refuse func(client, topic string, write bool) bool
}

func (h *refuseHook) ID() string { return "mqtttest-refuse" }

func (h *refuseHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

func (h *refuseHook) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

func (h *refuseHook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	return !h.refuse(cl.ID, topic, write)
}

// Broker is an in-process mochi broker.
type Broker struct {
	URL  string // tcp://host:port or tls://host:port
	Addr string // host:port
	Log  *Log   // every PUBLISH it accepted and every Last Will it sent

	tb   testing.TB
	srv  *mochi.Server
	once sync.Once
}

// StartMochi runs a broker until the test ends or Close.
func StartMochi(t testing.TB, o BrokerOptions) *Broker {
	t.Helper()
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler)})
	var err error
	switch {
	case o.Ledger != nil:
		err = srv.AddHook(new(auth.Hook), &auth.Options{Ledger: o.Ledger})
	case o.Refuse != nil:
		err = srv.AddHook(&refuseHook{refuse: o.Refuse}, nil)
	default:
		err = srv.AddHook(new(auth.AllowHook), nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	rec := NewLog()
	if err := srv.AddHook(&recorder{log: rec}, nil); err != nil {
		t.Fatal(err)
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: o.Addr, TLSConfig: o.TLS})
	if err := srv.AddListener(l); err != nil {
		t.Fatalf("mochi listener on %s: %v", o.Addr, err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	b := &Broker{Addr: l.Address(), Log: rec, tb: t, srv: srv}
	// Whatever the test, nothing a device publishes may carry a message's
	// content (logtest.Marker); the test's own clients (mqtttest-…) may.
	t.Cleanup(func() {
		for _, m := range rec.All() {
			if logtest.Leaks(m.Payload) && !strings.HasPrefix(m.Client, "mqtttest-") {
				t.Errorf("MQTT payload from %s on %s carries logtest.Marker (message content): %q", m.Client, m.Topic, m.Payload)
			}
		}
	})
	scheme := "tcp"
	if o.TLS != nil {
		scheme = "tls"
	}
	b.URL = scheme + "://" + b.Addr
	// By the time this runs the clients started later in the test have
	// been told to stop; give them a moment to leave first.
	t.Cleanup(func() { b.close(closeLimit) })
	return b
}

// Close stops the broker at once, under any connected clients, and frees
// its port. It never hangs the test; see close.
func (b *Broker) Close() { b.close(0) }

// close stops the broker without ever hanging the package: mochi v2.7.9 can
// deadlock in Close when a client disconnects at the same moment
// (Clients.GetByListener takes its read lock twice; mochi-mqtt/server#488).
// So it first waits up to drain for the clients to leave, then gives Close
// a bounded wait and leaves it behind if stuck; the listener is closed
// before the step that can deadlock, so the port is free either way.
func (b *Broker) close(drain time.Duration) {
	b.once.Do(func() {
		deadline := time.Now().Add(drain)
		for b.srv.Clients.Len() > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		done := make(chan struct{})
		go func() {
			_ = b.srv.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(closeLimit):
			b.tb.Logf("mochi broker Close still blocked after %s (mochi-mqtt/server#488); left behind", closeLimit)
		}
	})
}

// ---------------------------------------------------------------------------
// Mosquitto.

// FreePort returns a loopback TCP port nobody listens on now, for a server
// the test starts later.
func FreePort(t testing.TB) int {
	t.Helper()
	return freeport.Take(t)
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

// StartMosquitto runs a real Mosquitto on a free loopback port until the
// test ends and returns its tcp:// URL. It skips the test when Mosquitto is
// not installed.
func StartMosquitto(t testing.TB) string {
	t.Helper()
	return StartMosquittoConf(t, "allow_anonymous true\n")
}

// StartMosquittoConf is StartMosquitto with conf (password_file, acl_file
// and the like) in place of allow_anonymous true.
func StartMosquittoConf(t testing.TB, conf string) string {
	t.Helper()
	bin := mosquittoPath()
	if bin == "" {
		skipnote.Missing(t, "tests against Mosquitto", "mosquitto (not on PATH, /usr/sbin or /usr/local/sbin)", "mosquitto")
	}
	dir := t.TempDir()
	port := FreePort(t)
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, fmt.Appendf(nil, "listener %d 127.0.0.1\n%spersistence false\n", port, conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// The process writes its output straight to a file, read only when the
	// test needs to show it.
	outPath := filepath.Join(dir, "mosquitto.out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	output := func() string {
		b, _ := os.ReadFile(outPath)
		return string(b)
	}
	cmd := exec.Command(bin, "-c", confPath)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("mosquitto output:\n%s", output())
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(WaitLimit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return "tcp://" + addr
		}
		select {
		case <-exited:
			t.Fatalf("mosquitto exited at start:\n%s", output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %s: %v\n%s", addr, err, output())
		}
	}
}

// ---------------------------------------------------------------------------
// A client.

// ClientOptions shape a Client; the zero value is a plain anonymous client.
type ClientOptions struct {
	ClientID           string // default: mqtttest- and a random suffix
	TLS                *tls.Config
	Username, Password string
}

// Client is a real paho client, subscribed at QoS 1, that records every
// message it is sent.
type Client struct {
	Paho paho.Client
	Log  *Log
	once sync.Once
}

// Subscribe connects a Client to url and subscribes it to filter; it
// disconnects when the test ends or on Close.
func Subscribe(t testing.TB, url, filter string, o ClientOptions) *Client {
	t.Helper()
	if o.ClientID == "" {
		o.ClientID = "mqtttest-" + rand.Text()[:12]
	}
	c := &Client{Log: NewLog()}
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(o.ClientID).
		SetOrderMatters(true).SetAutoReconnect(false).SetCleanSession(true).
		SetStore(paho.NewMemoryStore()).SetConnectTimeout(5 * time.Second)
	if o.TLS != nil {
		opts.SetTLSConfig(o.TLS)
	}
	if o.Username != "" {
		opts.SetUsername(o.Username).SetPassword(o.Password)
	}
	c.Paho = paho.NewClient(opts)
	if tok := c.Paho.Connect(); !tok.WaitTimeout(WaitLimit) || tok.Error() != nil {
		t.Fatalf("MQTT client %s connect to %s: %v", o.ClientID, url, tok.Error())
	}
	t.Cleanup(c.Close)
	tok := c.Paho.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		c.Log.Add(Message{Topic: m.Topic(), Payload: bytes.Clone(m.Payload()), Retained: m.Retained()})
	})
	if !tok.WaitTimeout(WaitLimit) || tok.Error() != nil {
		t.Fatalf("MQTT client %s subscribe %s: %v", o.ClientID, filter, tok.Error())
	}
	return c
}

// Publish sends payload at QoS 1 and waits for the broker to take it.
func (c *Client) Publish(t testing.TB, topic string, retained bool, payload string) {
	t.Helper()
	tok := c.Paho.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(WaitLimit) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// Close disconnects the client (once).
func (c *Client) Close() {
	c.once.Do(func() {
		if c.Paho.IsConnected() {
			c.Paho.Disconnect(100)
		}
	})
}
