package mqttagent

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// leftovers lists goroutines that belong to an agent or to its MQTT client.
func leftovers() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "paho") || strings.Contains(g, "mqttagent.(*Agent)") {
			out = append(out, g)
		}
	}
	return out
}

func waitNoLeftovers(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := leftovers()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines outlived Run:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGoroutinesStop is not parallel: it must see only its own goroutines
// (parallel tests wait until the sequential ones are done).
func TestGoroutinesStop(t *testing.T) {
	if left := leftovers(); len(left) > 0 {
		t.Fatalf("goroutines left before the test:\n%s", strings.Join(left, "\n\n"))
	}
	t.Run("connected", func(t *testing.T) {
		b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
		ob := mqtttest.Subscribe(t, b.URL, "hl7edge/gw1/cmd/res", mqtttest.ClientOptions{})
		r := startAgent(t, Config{Broker: b.URL, HealthInterval: units.Duration(time.Second)}, agentSetup{})
		r.waitState(t, health.Up)
		ob.Publish(t, "hl7edge/gw1/cmd/req", false, `{"id":"g1","name":"health"}`)
		response(t, ob, 0, "g1", command.Successful)
		r.a.Alarm("test", "before stop")
		r.stop(t)
		ob.Close()
		waitNoLeftovers(t)
	})
	t.Run("broker never reachable", func(t *testing.T) {
		r := startAgent(t, Config{Broker: fmt.Sprintf("tcp://127.0.0.1:%d", mqtttest.FreePort(t))}, agentSetup{})
		r.waitState(t, health.Down)
		r.a.Alarm("test", "buffered")
		r.stop(t)
		waitNoLeftovers(t)
	})
	t.Run("broker lost", func(t *testing.T) {
		b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
		r := startAgent(t, Config{Broker: b.URL}, agentSetup{})
		r.waitState(t, health.Up)
		b.Close()
		r.waitState(t, health.Down)
		r.stop(t)
		waitNoLeftovers(t)
	})
}
