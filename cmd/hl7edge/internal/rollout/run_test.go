package rollout

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/hl7edge/hl7edge/device/firmware"
)

// refuser is a mochi hook that lets every client in and refuses the first
// `left` subscriptions to filter (-1: every one), as a broker's ACL does,
// or as mochi does with a SUBSCRIBE whose packet id is one of its own
// unacknowledged deliveries to that client (return code 0x91).
type refuser struct {
	mochi.HookBase
	filter string
	mu     sync.Mutex
	left   int
}

func (h *refuser) ID() string { return "refuser" }

func (h *refuser) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

func (h *refuser) OnConnectAuthenticate(*mochi.Client, packets.Packet) bool { return true }

func (h *refuser) OnACLCheck(_ *mochi.Client, topic string, write bool) bool {
	if write || topic != h.filter {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.left == 0 {
		return true
	}
	if h.left > 0 {
		h.left--
	}
	return false
}

// refusingBroker runs mochi with h and returns a client connected to it
// that has published gw1's retained firmware state for command c1.
func refusingBroker(t *testing.T, h *refuser) mqtt.Client {
	t.Helper()
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(h, nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + l.Address()).SetClientID("operator").SetOrderMatters(true))
	t.Cleanup(func() {
		c.Disconnect(250)
		_ = srv.Close()
	})
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	state, _ := json.Marshal(firmware.Public{State: firmware.Committed, Version: "2.0", Command: "c1"})
	if tok := c.Publish("hl7edge/gw1/firmware", 1, true, state); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	return c
}

// TestWatchThroughARefusedSubscribe: a broker that refuses the first
// subscriptions to the firmware states (paho reports that only in the
// SUBACK, not as an error) must not leave the rollout blind: Watch asks
// again, and the retained state arrives. Before, Watch returned as if
// subscribed, and a resumed rollout saw no box until --deadline.
func TestWatchThroughARefusedSubscribe(t *testing.T) {
	c := refusingBroker(t, &refuser{filter: "hl7edge/+/firmware", left: 2})
	r := &Runner{}
	if err := r.Watch(t.Context(), c, "hl7edge"); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		if p, ok := r.watch.get("gw1"); ok && p.Command == "c1" {
			return
		}
		select {
		case <-r.watch.changed:
		case <-deadline:
			t.Fatal("gw1's retained firmware state never arrived: the subscription was refused and taken as granted")
		}
	}
}

// TestWatchReportsARefusal: a refusal that lasts (an ACL) is an error that
// names the filter and what to fix, not a rollout waiting for nothing.
func TestWatchReportsARefusal(t *testing.T) {
	c := refusingBroker(t, &refuser{filter: "hl7edge/+/firmware", left: -1})
	err := (&Runner{}).Watch(t.Context(), c, "hl7edge")
	if err == nil || !strings.Contains(err.Error(), "hl7edge/+/firmware (return code 0x80)") || !strings.Contains(err.Error(), "ACL") {
		t.Fatalf("Watch: %v; want a refusal of hl7edge/+/firmware naming the ACL", err)
	}
	t.Log(err)
}
