package mqtttest_test

import (
	"crypto/tls"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/hooks/auth"

	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
)

// roundTrip publishes through url and checks what a subscriber and, when
// there is one, the broker's record saw.
func roundTrip(t *testing.T, url string, b *mqtttest.Broker, o mqtttest.ClientOptions) {
	t.Helper()
	sub := mqtttest.Subscribe(t, url, "dev/+/status", o)
	pub := mqtttest.Subscribe(t, url, "unused/#", o)
	pub.Publish(t, "dev/a/status", false, `{"state":"starting"}`)
	sub.Log.WaitFor(t, 0, "the starting status", mqtttest.JSONHas("dev/a/status", map[string]any{"state": "starting"}))
	mark := sub.Log.Mark()
	pub.Publish(t, "other/topic", false, `{"state":"online","session":7}`)
	pub.Publish(t, "dev/a/status", true, `{"state":"online","session":7}`)
	i, m := sub.Log.WaitFor(t, mark, "the online status", mqtttest.JSONHas("dev/a/status", map[string]any{"state": "online", "session": 7}))
	if i != mark || m.JSON(t)["state"] != "online" {
		t.Errorf("online status is message #%d (%+v), want #%d: the subscriber got something it did not subscribe to", i, m, mark)
	}
	// A late subscriber gets the retained message, flagged as such.
	late := mqtttest.Subscribe(t, url, "dev/a/status", o)
	if _, m := late.Log.WaitFor(t, 0, "the retained status", mqtttest.JSONHas("dev/a/status", map[string]any{"state": "online"})); !m.Retained {
		t.Errorf("the late subscriber's copy is not marked retained: %+v", m)
	}
	if b == nil {
		return
	}
	_, rec := b.Log.WaitFor(t, 0, "the broker's record of the retained publish", func(m mqtttest.Message) bool { return m.Retained })
	if rec.Client == "" || rec.Topic != "dev/a/status" || rec.Will {
		t.Errorf("broker recorded %+v, want a retained dev/a/status from a named client", rec)
	}
	b.Log.WaitFor(t, 0, "the broker's record of other/topic", func(m mqtttest.Message) bool { return m.Topic == "other/topic" && !m.Retained })
}

func TestMochiRecordsAndDelivers(t *testing.T) {
	t.Parallel()
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	roundTrip(t, b.URL, b, mqtttest.ClientOptions{})
}

func TestMochiRecordsWill(t *testing.T) {
	t.Parallel()
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	var mu sync.Mutex
	var conn net.Conn
	opts := paho.NewClientOptions().AddBroker(b.URL).SetClientID("dying").
		SetWill("dev/dying/status", `{"state":"offline"}`, 1, true).SetAutoReconnect(false).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
			mu.Lock()
			conn = c
			mu.Unlock()
			return c, err
		})
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(mqtttest.WaitLimit) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	// Cut the connection without a DISCONNECT, as a crashed device would.
	mu.Lock()
	_ = conn.Close()
	mu.Unlock()
	_, m := b.Log.WaitFor(t, 0, "the will", func(m mqtttest.Message) bool { return m.Will })
	if m.Client != "dying" || m.Topic != "dev/dying/status" || !m.Retained || m.JSON(t)["state"] != "offline" {
		t.Errorf("will recorded as %+v", m)
	}
}

func TestMochiTLSAndLedger(t *testing.T) {
	t.Parallel()
	ca, err := throwawayca.NewCA("mqtttest CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("broker", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{
		TLS:    &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{leaf.TLS}},
		Ledger: &auth.Ledger{Auth: auth.AuthRules{{Username: "ok", Password: "pw", Allow: true}}},
	})
	if b.URL != "tls://"+b.Addr {
		t.Fatalf("URL %s, want tls://%s", b.URL, b.Addr)
	}
	clientTLS := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.Pool()}
	roundTrip(t, b.URL, b, mqtttest.ClientOptions{TLS: clientTLS, Username: "ok", Password: "pw"})

	bad := paho.NewClient(paho.NewClientOptions().AddBroker(b.URL).SetClientID("bad").
		SetTLSConfig(clientTLS).SetUsername("ok").SetPassword("wrong").SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second))
	if tok := bad.Connect(); !tok.WaitTimeout(mqtttest.WaitLimit) || tok.Error() == nil {
		bad.Disconnect(0)
		t.Fatal("a client with the wrong password connected: the ledger is not enforced")
	}
}

func TestMochiCloseUnderClientFreesPort(t *testing.T) {
	t.Parallel()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(mqtttest.FreePort(t)))
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{Addr: addr})
	c := mqtttest.Subscribe(t, b.URL, "x", mqtttest.ClientOptions{})
	done := make(chan struct{})
	go func() {
		b.Close() // with a client connected
		b.Close() // and again: a no-op
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(mqtttest.WaitLimit):
		t.Fatal("Close hung")
	}
	if cn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		cn.Close()
		t.Fatalf("%s still accepts connections after Close", addr)
	}
	c.Close()
	b2 := mqtttest.StartMochi(t, mqtttest.BrokerOptions{Addr: addr})
	if b2.URL != b.URL {
		t.Fatalf("restarted broker on %s, want %s", b2.URL, b.URL)
	}
	roundTrip(t, b2.URL, b2, mqtttest.ClientOptions{})
	for _, m := range b.Log.All() {
		t.Errorf("the closed broker recorded %+v", m)
	}
}

func TestMosquitto(t *testing.T) {
	t.Parallel()
	url := mqtttest.StartMosquitto(t)
	roundTrip(t, url, nil, mqtttest.ClientOptions{})
}
