package mqttagent

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// A signed command is opened, and its id recorded against replay, in the
// goroutine paho starts for each message. The appliance reads the replay
// record anew for the next box once Run has returned: an open still under
// way then (waiting for the disk sync gate behind the spool's flush) would
// write its stale copy of the record over the new box's, and the ids the
// new box recorded meanwhile could be replayed after the next restart.
// So Run must not return while a command is being opened.
func TestRunWaitsForACommandBeingOpened(t *testing.T) {
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	ob := mqtttest.Subscribe(t, b.URL, "hl7edge/gw1/cmd/res", mqtttest.ClientOptions{})
	defer ob.Close()
	opening, release := make(chan struct{}), make(chan struct{})
	var opened, released sync.Once
	defer released.Do(func() { close(release) })
	r := startAgent(t, Config{Broker: b.URL}, agentSetup{tweak: func(a *Agent) {
		a.opts.Signed = func([]byte) (command.Request, string, error) {
			opened.Do(func() { close(opening) })
			<-release
			return command.Request{}, "", errors.New("refused by the test")
		}
	}})
	r.waitState(t, health.Up)
	ob.Publish(t, "hl7edge/gw1/cmd/req", false, `{"signed":"e30=","minisig":"x"}`)
	select {
	case <-opening:
	case <-time.After(waitLimit):
		t.Fatalf("the signed command was not opened within %s", waitLimit)
	}
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		t.Fatalf("Run returned (%v) while a signed command was still being opened", err)
	case <-time.After(2 * time.Second): // Run's own stop takes some 250 ms
	}
	released.Do(func() { close(release) })
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatalf("Run did not return within %s of the open ending", waitLimit)
	}
}
