package mqttagent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// TestCommandFloodCountedAndLogBounded is the flood of issue 18: thousands
// of commands at once while one runs. The queue stays bounded; every
// rejection and every answer the outbox had to drop is in the health
// snapshot while the flood is still on (not only in a line at shutdown);
// and the log holds a few lines per second of each kind, not one per
// command, so the tail an operator reads keeps its other lines.
func TestCommandFloodCountedAndLogBounded(t *testing.T) {
	t.Parallel()
	const flood = 2000
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	ob := mqtttest.Subscribe(t, b.URL, "hl7edge/gw1/cmd/res", mqtttest.ClientOptions{})
	release := make(chan struct{})
	r := startAgent(t, Config{Broker: b.URL, HealthInterval: units.Duration(time.Hour)}, agentSetup{
		register: func(r *runner) {
			r.disp.Register("block", func(ctx context.Context, _ json.RawMessage) (any, string, error) {
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil, "", nil
			})
		},
	})
	defer close(release)
	r.waitState(t, health.Up)
	start := time.Now()
	var toks []paho.Token
	for i := range flood {
		toks = append(toks, ob.Paho.Publish("hl7edge/gw1/cmd/req", 1, false, fmt.Sprintf(`{"id":"f%d","name":"block"}`, i)))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(waitLimit) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	// One runs, CommandQueue wait, the rest are rejected busy.
	wantRejected := uint64(flood - 1 - CommandQueue)
	counter := func(name string) uint64 {
		s := r.reg.Snapshot()
		c, _ := s.Component(health.Service, "mqtt")
		return c.Counters[name]
	}
	deadline := time.Now().Add(waitLimit)
	for counter(health.CounterCommandsRejected) != wantRejected {
		if time.Now().After(deadline) {
			t.Fatalf("health counts %d commands rejected during the flood, want %d", counter(health.CounterCommandsRejected), wantRejected)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, dropped := r.a.out.dropped(); counter(health.CounterResponsesDropped) != dropped {
		t.Errorf("health counts %d answers dropped, the outbox dropped %d", counter(health.CounterResponsesDropped), dropped)
	}
	if got := counter(health.CounterCommandsAccepted); got != 1+CommandQueue {
		t.Errorf("health counts %d commands accepted, want %d", got, 1+CommandQueue)
	}
	// Two kinds of line (rejected, and rejected because busy), each at
	// most cmdLogBurst a second.
	secs := int(time.Since(start)/time.Second) + 1
	if n := strings.Count(r.logs.String(), "mqtt command rejected"); n > 2*cmdLogBurst*secs {
		t.Errorf("%d log lines for %d rejected commands in %ds; want at most %d a second of each kind", n, wantRejected, secs, cmdLogBurst)
	}
}
