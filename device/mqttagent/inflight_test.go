package mqttagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
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

// A signed command that was verified, its id recorded against replay, but
// then not run (the queue full, the agent stopping) is answered "send it
// again". The same envelope must then run: its id was never obeyed. A
// command that did run stays refused.
func TestSignedCommandNotRunMayBeSentAgain(t *testing.T) {
	signer, pub, err := trust.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := trust.ParseKeys([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	record := filepath.Join(t.TempDir(), "signed-commands.json")
	gate := trust.NewGate(keys, "gw1", record, nil, nil)
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	ob := mqtttest.Subscribe(t, b.URL, "hl7edge/gw1/cmd/res", mqtttest.ClientOptions{})
	defer ob.Close()
	exp := time.Now().Add(10 * time.Minute)
	env, err := trust.Seal(trust.Inner{Request: command.Request{ID: "s1", Name: "block", Expires: &exp}, Device: "gw1"},
		func(m []byte) ([]byte, error) { return signer.Sign(m, "test"), nil })
	if err != nil {
		t.Fatal(err)
	}
	ob.Publish(t, "hl7edge/gw1/cmd/req", true, string(env))
	unblock := make(chan struct{})
	var unblocked sync.Once
	defer unblocked.Do(func() { close(unblock) })
	r := startAgent(t, Config{Broker: b.URL, HealthInterval: units.Duration(time.Hour)}, agentSetup{
		tweak: func(a *Agent) { a.opts.Signed, a.opts.Forget = gate.Open, gate.Forget },
		register: func(r *runner) {
			r.disp.Register("block", func(ctx context.Context, _ json.RawMessage) (any, string, error) {
				select {
				case <-unblock:
				case <-ctx.Done():
				}
				return nil, "", nil
			})
		},
	})
	r.waitState(t, health.Up)
	// A retained copy (heard on subscribing) is refused, and costs the card nothing.
	if m := firstAnswer(t, ob, 0, "s1"); m["status"] != string(command.Rejected) || !strings.Contains(fmt.Sprint(m["detail"]), "retained") {
		t.Fatalf("a retained signed command: %v (%v), want rejected as retained", m["status"], m["detail"])
	}
	ob.Publish(t, "hl7edge/gw1/cmd/req", true, "")
	noRecord(t, record, "a retained signed command")
	// One running, CommandQueue waiting: the signed one finds no room.
	for i := 0; i <= CommandQueue; i++ {
		ob.Publish(t, "hl7edge/gw1/cmd/req", false, fmt.Sprintf(`{"id":"b%d","name":"block"}`, i))
		response(t, ob, 0, fmt.Sprintf("b%d", i), command.Accepted)
		if i == 0 {
			waitQueueEmpty(t, r) // b0 runs
		}
	}
	from0 := len(ob.Log.All())
	ob.Publish(t, "hl7edge/gw1/cmd/req", false, string(env))
	_, m := ob.Log.WaitFor(t, from0, "the busy answer to s1", mqtttest.JSONHas("hl7edge/gw1/cmd/res", map[string]any{"id": "s1", "status": "rejected"}))
	if d := fmt.Sprint(m.JSON(t)["detail"]); !strings.Contains(d, "busy") || !strings.Contains(d, "again") {
		t.Fatalf("the signed command refused for a full queue: %v, want busy, told to send it again", d)
	}
	noRecord(t, record, "a signed command refused busy")
	unblocked.Do(func() { close(unblock) })
	for i := 0; i <= CommandQueue; i++ {
		response(t, ob, 0, fmt.Sprintf("b%d", i), command.Successful)
	}
	from := len(ob.Log.All())
	ob.Publish(t, "hl7edge/gw1/cmd/req", false, string(env))
	mm := firstAnswer(t, ob, from, "s1")
	if mm["status"] != string(command.Accepted) {
		t.Fatalf("the signed command sent again as told: %v (%v), want accepted", mm["status"], mm["detail"])
	}
	response(t, ob, from, "s1", command.Successful)
	from = len(ob.Log.All())
	ob.Publish(t, "hl7edge/gw1/cmd/req", false, string(env))
	mm = firstAnswer(t, ob, from, "s1")
	if mm["status"] != string(command.Rejected) || !strings.Contains(fmt.Sprint(mm["detail"]), "already used") {
		t.Fatalf("the signed command replayed after it ran: %v (%v), want rejected as a replay", mm["status"], mm["detail"])
	}
}

func waitQueueEmpty(t *testing.T, r *runner) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for len(r.a.cmdQ) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the worker did not take the first command")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// firstAnswer is the first cmd/res answer to id from the from'th message on.
func firstAnswer(t *testing.T, ob *mqtttest.Client, from int, id string) map[string]any {
	t.Helper()
	_, m := ob.Log.WaitFor(t, from, "an answer to "+id, mqtttest.JSONHas("hl7edge/gw1/cmd/res", map[string]any{"id": id}))
	return m.JSON(t)
}

// noRecord fails the test when the replay record was written: what was
// refused unopened must cost the card no writes.
func noRecord(t *testing.T, record, what string) {
	t.Helper()
	if _, err := os.Stat(record); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s: the replay record was written (%v); a copy refused unopened costs the card nothing", what, err)
	}
}
