package appliance_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestUnsignedRestartFloodKeepsIntake is issue 24's item 4: someone with
// the broker's password publishes 10 unsigned restarts a second while a
// sender delivers a message every 100 ms, one connection each. Every
// message gets AA, the box is never rebuilt, and every refused restart is
// counted (commands_throttled) and answered with why.
func TestUnsignedRestartFloodKeepsIntake(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-restart-flood")
	r.writeConfig(r.yaml(r.mllpPort, ""))
	op := r.operator(t)
	rn := r.start(appliance.Options{})
	op.waitOnline(t, 0)
	mustSendHL7(t, r.mllpPort, hl7Message("FLOOD-0"))

	const floods = 50
	from := op.Log.Mark()
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := range floods {
			<-tick.C
			op.Publish(t, op.base+"cmd/req", false, fmt.Sprintf(`{"id":"flood-%d","name":"restart"}`, i))
		}
	})
	var failed []string
	for i := range floods {
		ack, err := sendHL7(t, r.mllpPort, hl7Message(fmt.Sprintf("FLOOD-%d", i+1)))
		if err != nil || !strings.Contains(ack, "MSA|AA|") {
			failed = append(failed, fmt.Sprintf("message %d: err %v", i+1, err))
		}
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	if len(failed) > 0 || rn.starts() != 1 {
		t.Errorf("under %d unsigned restarts at 10/s: %d of %d sends failed (%v) and the box started %d times; want none failed and 1 start",
			floods, len(failed), floods, failed, rn.starts())
	}
	// Every restart was answered: rejected, saying why and what to do.
	for i := range floods {
		id := fmt.Sprint("flood-", i)
		_, m := op.Log.WaitFor(t, from, "the answer to "+id, func(m mqtttest.Message) bool {
			var r command.Response
			return m.Topic == op.base+"cmd/res" && json.Unmarshal(m.Payload, &r) == nil && r.ID == id && r.Status != command.Accepted
		})
		var r command.Response
		_ = json.Unmarshal(m.Payload, &r)
		if r.Status != command.Rejected || !strings.Contains(r.Detail, "signed") || !strings.Contains(r.Detail, "systemctl restart") {
			t.Fatalf("%s answered %s %q; want rejected, saying how to restart instead", id, r.Status, r.Detail)
		}
	}
	s := op.health(t)
	mq, _ := s.Component(health.Service, "mqtt")
	if got := mq.Counters[health.CounterCommandsThrottled]; got != floods {
		t.Errorf("commands_throttled = %d in the health snapshot, want %d", got, floods)
	}
}
