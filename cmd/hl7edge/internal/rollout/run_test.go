package rollout

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/hl7edge/hl7edge/device/firmware"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
)

// refusingBroker runs mochi refusing the first n subscriptions to the
// firmware states (n < 0: every one) and returns a client connected to it
// that has published gw1's retained firmware state for command c1.
func refusingBroker(t *testing.T, n int) mqtt.Client {
	t.Helper()
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{Refuse: mqtttest.RefuseSubscriptions("hl7edge/+/firmware", n)})
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(b.URL).SetClientID("operator").SetOrderMatters(true))
	t.Cleanup(func() { c.Disconnect(250) })
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
	c := refusingBroker(t, 2)
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
	c := refusingBroker(t, -1)
	err := (&Runner{}).Watch(t.Context(), c, "hl7edge")
	if err == nil || !strings.Contains(err.Error(), "hl7edge/+/firmware (return code 0x80)") || !strings.Contains(err.Error(), "ACL") {
		t.Fatalf("Watch: %v; want a refusal of hl7edge/+/firmware naming the ACL", err)
	}
	t.Log(err)
}
