package mqttagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/pipeline/logtest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

type brokerCase struct {
	name  string
	start func(t *testing.T) string
}

var brokerCases = []brokerCase{
	{"mochi", func(t *testing.T) string { return mqtttest.StartMochi(t, mqtttest.BrokerOptions{}).URL }},
	{"mosquitto", func(t *testing.T) string { return mqtttest.StartMosquitto(t) }},
}

// response waits for the cmd/res answer with this id and status.
func response(t *testing.T, ob *mqtttest.Client, from int, id string, status command.Status) (int, map[string]any) {
	t.Helper()
	i, m := ob.Log.WaitFor(t, from, fmt.Sprintf("%s answer to command %q", status, id),
		mqtttest.JSONHas("hl7edge/gw1/cmd/res", map[string]any{"id": id, "status": string(status)}))
	return i, m.JSON(t)
}

func TestAgentOnBroker(t *testing.T) {
	t.Parallel()
	for _, bc := range brokerCases {
		t.Run(bc.name, func(t *testing.T) {
			t.Parallel()
			url := bc.start(t)
			// A retained command left on the broker must never run, not even
			// once at the agent's first subscription.
			pre := mqtttest.Subscribe(t, url, "hl7edge/gw1/#", mqtttest.ClientOptions{})
			pre.Publish(t, "hl7edge/gw1/cmd/req", true, `{"id":"stale","name":"health"}`)

			dir := t.TempDir()
			session := filepath.Join(dir, "mqtt.session")
			if err := os.WriteFile(session, []byte("6\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			r := startAgent(t, Config{Broker: url, HealthInterval: units.Duration(time.Hour)}, agentSetup{sessionFile: session})
			if r.a.Session() != 7 {
				t.Fatalf("session = %d, want 7 (file held 6)", r.a.Session())
			}
			if b, _ := os.ReadFile(session); strings.TrimSpace(string(b)) != "7" {
				t.Fatalf("session file holds %q, want 7", b)
			}
			r.waitState(t, health.Up)

			_, stale := response(t, pre, 0, "stale", command.Rejected)
			if !strings.Contains(fmt.Sprint(stale["detail"]), "retained") {
				t.Errorf("retained command detail = %q, want it to say retained", stale["detail"])
			}
			pre.Publish(t, "hl7edge/gw1/cmd/req", true, "") // clear it

			// A subscriber arriving after the birth still gets it (retained).
			late := mqtttest.Subscribe(t, url, "hl7edge/gw1/#", mqtttest.ClientOptions{})
			_, birth := late.Log.WaitFor(t, 0, "retained online status", mqtttest.JSONHas("hl7edge/gw1/status", map[string]any{"state": "online", "session": 7}))
			if !birth.Retained {
				t.Error("birth reached a late subscriber without the retained flag")
			}
			// So does the latest health, once published: a fleet view reads
			// every box's from the broker at once, offline boxes included.
			pre.Log.WaitFor(t, 0, "health", mqtttest.JSONHas("hl7edge/gw1/health", map[string]any{"device": "gw1"}))
			later := mqtttest.Subscribe(t, url, "hl7edge/gw1/health", mqtttest.ClientOptions{})
			_, lateHealth := later.Log.WaitFor(t, 0, "retained health", mqtttest.JSONHas("hl7edge/gw1/health", map[string]any{"device": "gw1"}))
			if !lateHealth.Retained {
				t.Error("health reached a late subscriber without the retained flag")
			}
			b := birth.JSON(t)
			if b["version"] != "1.2.3" {
				t.Errorf("birth version = %v, want 1.2.3", b["version"])
			}
			if l, _ := b["labels"].(map[string]any); l["site"] != "north" {
				t.Errorf("birth labels = %v, want the device's labels (site: north)", b["labels"])
			}
			if _, err := time.Parse(time.RFC3339, fmt.Sprint(b["time"])); err != nil {
				t.Errorf("birth time %v is not RFC3339: %v", b["time"], err)
			}

			// health: accepted, then successful with the snapshot.
			late.Publish(t, "hl7edge/gw1/cmd/req", false, `{"id":"c1","name":"health","args":{}}`)
			ia, _ := response(t, late, 0, "c1", command.Accepted)
			is, ok := response(t, late, 0, "c1", command.Successful)
			if ia > is {
				t.Error("successful came before accepted")
			}
			if d, _ := ok["data"].(map[string]any); d["device"] != "gw1" {
				t.Errorf("health data = %v, want a snapshot of gw1", ok["data"])
			}

			// Rejections go out alone, without an accepted first.
			expired := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
			late.Publish(t, "hl7edge/gw1/cmd/req", false, `{"id":"c2","name":"reboot-the-moon"}`)
			late.Publish(t, "hl7edge/gw1/cmd/req", false, `{"id":"c3","name":"health","expires":"`+expired+`"}`)
			late.Publish(t, "hl7edge/gw1/cmd/req", false, `{"id":"c4","name":"health"`)
			late.Publish(t, "hl7edge/gw1/cmd/req", false, `{"id":"c5","name":"health"}`)
			_, unknown := response(t, late, 0, "c2", command.Rejected)
			if !strings.Contains(fmt.Sprint(unknown["detail"]), "unknown command") {
				t.Errorf("unknown command detail = %q", unknown["detail"])
			}
			_, exp := response(t, late, 0, "c3", command.Rejected)
			if !strings.Contains(fmt.Sprint(exp["detail"]), "expired") {
				t.Errorf("expired command detail = %q", exp["detail"])
			}
			_, bad := response(t, late, 0, "c4", command.Rejected)
			if !strings.Contains(fmt.Sprint(bad["detail"]), "not valid JSON") {
				t.Errorf("malformed command detail = %q", bad["detail"])
			}
			last, _ := response(t, late, 0, "c5", command.Successful)
			for _, m := range late.Log.All()[:last] {
				if mqtttest.JSONHas("hl7edge/gw1/cmd/res", map[string]any{"status": "accepted"})(m) {
					if id := m.JSON(t)["id"]; id != "c1" && id != "c5" {
						t.Errorf("command %v was rejected but also accepted", id)
					}
				}
			}

			r.a.Alarm("spool-nearly-full", "spool at 91% of 2GiB")
			_, al := late.Log.WaitFor(t, 0, "alarm", mqtttest.JSONHas("hl7edge/gw1/alarm", map[string]any{"kind": "spool-nearly-full", "detail": "spool at 91% of 2GiB"}))
			if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(al.JSON(t)["time"])); err != nil {
				t.Errorf("alarm time: %v", err)
			}

			// Clean stop: offline, retained, same session.
			mark := late.Log.Mark()
			r.stop(t)
			late.Log.WaitFor(t, mark, "offline status", mqtttest.JSONHas("hl7edge/gw1/status", map[string]any{"state": "offline", "session": 7}))
			after := mqtttest.Subscribe(t, url, "hl7edge/gw1/status", mqtttest.ClientOptions{})
			_, off := after.Log.WaitFor(t, 0, "retained offline status", mqtttest.JSONHas("hl7edge/gw1/status", map[string]any{"state": "offline", "session": 7}))
			if !off.Retained {
				t.Error("offline status is not retained")
			}
			if r.a.comp.State() != health.Stopped {
				t.Errorf("mqtt component state after Run = %s, want stopped", r.a.comp.State())
			}
		})
	}
}

// TestKillPublishesWill runs the agent in a real child process, kills it
// with SIGKILL (no chance to say goodbye) and checks that the broker
// publishes the Last Will with the child's session counter.
func TestKillPublishesWill(t *testing.T) {
	t.Parallel()
	for _, bc := range brokerCases {
		t.Run(bc.name, func(t *testing.T) {
			t.Parallel()
			url := bc.start(t)
			dev := "kid-" + bc.name
			status := "hl7edge/" + dev + "/status"
			ob := mqtttest.Subscribe(t, url, status, mqtttest.ClientOptions{})
			session := filepath.Join(t.TempDir(), "mqtt.session")
			if err := os.WriteFile(session, []byte("41\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childBrokerEnv+"="+url, childDeviceEnv+"="+dev, childSessionEnv+"="+session)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var out logtest.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() {
				_ = stdin.Close()
				_ = cmd.Process.Kill()
				<-exited
				if t.Failed() {
					t.Logf("child output:\n%s", out.String())
				}
			})
			ob.Log.WaitFor(t, 0, "child's birth", mqtttest.JSONHas(status, map[string]any{"state": "online", "session": 42}))

			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			err = <-exited
			exited <- err
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child ended with %v, want killed by SIGKILL", err)
			}
			ob.Log.WaitFor(t, 0, "Last Will after SIGKILL", mqtttest.JSONHas(status, map[string]any{"state": "offline", "session": 42}))
			late := mqtttest.Subscribe(t, url, status, mqtttest.ClientOptions{})
			_, will := late.Log.WaitFor(t, 0, "retained will", mqtttest.JSONHas(status, map[string]any{"state": "offline", "session": 42}))
			if !will.Retained {
				t.Error("the Last Will is not retained")
			}
		})
	}
}

func TestHealthPeriodic(t *testing.T) {
	t.Parallel()
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	ob := mqtttest.Subscribe(t, b.URL, "hl7edge/gw1/health", mqtttest.ClientOptions{})
	r := startAgent(t, Config{Broker: b.URL, HealthInterval: units.Duration(time.Second)}, agentSetup{
		register: func(r *runner) { r.reg.Component(health.Destination, "ehr", "webservice").SetState(health.Up) },
	})
	// The first snapshot goes out at connect; two more can only come from the interval.
	var prev time.Time
	for n := range 3 {
		_, m := ob.Log.WaitFor(t, n, fmt.Sprintf("health snapshot #%d", n+1), func(m mqtttest.Message) bool { return m.Topic == "hl7edge/gw1/health" })
		var s health.Snapshot
		if err := json.Unmarshal(m.Payload, &s); err != nil {
			t.Fatalf("health payload: %v", err)
		}
		if c, ok := s.Component(health.Destination, "ehr"); !ok || c.State != health.Up || s.Device != "gw1" {
			t.Fatalf("snapshot #%d = %+v, want gw1 with ehr up", n+1, s)
		}
		if !s.Time.After(prev) {
			t.Errorf("snapshot #%d is not newer than the one before", n+1)
		}
		prev = s.Time
	}
	r.stop(t)
}

func TestHealthOnChangeDebounced(t *testing.T) {
	t.Parallel()
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	ob := mqtttest.Subscribe(t, b.URL, "hl7edge/gw1/health", mqtttest.ClientOptions{})
	var ehr *health.Component
	r := startAgent(t, Config{Broker: b.URL, HealthInterval: units.Duration(time.Hour)}, agentSetup{
		register: func(r *runner) { ehr = r.reg.Component(health.Destination, "ehr", "webservice") },
	})
	r.waitState(t, health.Up)
	state := func(want health.State) func(mqtttest.Message) bool {
		return func(m mqtttest.Message) bool {
			var s health.Snapshot
			if json.Unmarshal(m.Payload, &s) != nil {
				return false
			}
			c, ok := s.Component(health.Destination, "ehr")
			return ok && c.State == want
		}
	}
	ob.Log.WaitFor(t, 0, "first snapshot", state(health.Starting))

	// With a one-hour interval, only the change itself can publish this.
	mark := ob.Log.Mark()
	ehr.SetState(health.Down)
	ob.Log.WaitFor(t, mark, "snapshot with ehr down", state(health.Down))

	// A flapping component must not flood the broker.
	mark = ob.Log.Mark()
	for i := range 200 {
		if i%2 == 0 {
			ehr.SetState(health.Up)
		} else {
			ehr.SetState(health.Down)
		}
	}
	ehr.SetState(health.Paused)
	end, _ := ob.Log.WaitFor(t, mark, "snapshot with the final state", state(health.Paused))
	if n := end + 1 - mark; n > 3 {
		t.Errorf("201 state changes in a burst gave %d health publications, want at most 3 (debounced)", n)
	}
	r.stop(t)
}

func TestBrokerDownThenUp(t *testing.T) {
	t.Parallel()
	port := mqtttest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var ehr *health.Component
	r := startAgent(t, Config{Broker: "tcp://" + addr, HealthInterval: units.Duration(time.Hour)}, agentSetup{
		register: func(r *runner) { ehr = r.reg.Component(health.Destination, "ehr", "webservice") },
	})
	r.waitState(t, health.Down) // it tried, failed, and keeps running

	for i := range AlarmBuffer + 50 {
		r.a.Alarm("test", fmt.Sprintf("alarm %d", i))
	}
	ehr.SetState(health.Down)
	if _, alarms, _ := r.a.out.pending(); alarms != AlarmBuffer {
		t.Fatalf("buffered alarms = %d, want the bound %d", alarms, AlarmBuffer)
	}
	select {
	case err := <-r.done:
		t.Fatalf("Run returned %v with the broker down", err)
	default:
	}

	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{Addr: addr})
	agentMsgs := func(topic string) []mqtttest.Message {
		var out []mqtttest.Message
		for _, m := range b.Log.All() {
			if m.Client == "hl7edge-gw1" && m.Topic == topic {
				out = append(out, m)
			}
		}
		return out
	}
	b.Log.WaitFor(t, 0, "the last buffered alarm", mqtttest.JSONHas("hl7edge/gw1/alarm", map[string]any{"detail": fmt.Sprintf("alarm %d", AlarmBuffer+49)}))
	alarms := agentMsgs("hl7edge/gw1/alarm")
	if len(alarms) != AlarmBuffer {
		t.Fatalf("broker got %d alarms, want the last %d", len(alarms), AlarmBuffer)
	}
	for i, m := range alarms {
		if want := fmt.Sprintf("alarm %d", i+50); m.JSON(t)["detail"] != want {
			t.Fatalf("alarm #%d = %v, want %q (the newest, in order)", i, m.JSON(t)["detail"], want)
		}
	}
	_, h := b.Log.WaitFor(t, 0, "health", func(m mqtttest.Message) bool { return m.Topic == "hl7edge/gw1/health" })
	var s health.Snapshot
	if err := json.Unmarshal(h.Payload, &s); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.Component(health.Destination, "ehr"); c.State != health.Down {
		t.Errorf("first health after the outage shows ehr %s, want the latest state down", c.State)
	}
	if ab, _ := b.Log.WaitFor(t, 0, "birth", mqtttest.JSONHas("hl7edge/gw1/status", map[string]any{"state": "online"})); ab > indexOf(b.Log.All(), "hl7edge/gw1/alarm") {
		t.Error("buffered alarms went out before the birth")
	}

	// Lose the broker while connected: the agent buffers, then reconnects,
	// publishes a new birth and what it held.
	b.Close()
	r.waitState(t, health.Down)
	r.a.Alarm("test", "during the second outage")
	b2 := mqtttest.StartMochi(t, mqtttest.BrokerOptions{Addr: addr})
	b2.Log.WaitFor(t, 0, "birth after reconnect", mqtttest.JSONHas("hl7edge/gw1/status", map[string]any{"state": "online"}))
	b2.Log.WaitFor(t, 0, "alarm held during the outage", mqtttest.JSONHas("hl7edge/gw1/alarm", map[string]any{"detail": "during the second outage"}))
	r.stop(t)
}

func indexOf(ms []mqtttest.Message, topic string) int {
	for i, m := range ms {
		if m.Topic == topic {
			return i
		}
	}
	return len(ms)
}

// TestCommandQueue fills the worker's queue: the overflow is rejected busy,
// and at stop every accepted command still gets a final answer.
func TestCommandQueue(t *testing.T) {
	t.Parallel()
	b := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	ob := mqtttest.Subscribe(t, b.URL, "hl7edge/gw1/cmd/res", mqtttest.ClientOptions{})
	r := startAgent(t, Config{Broker: b.URL, HealthInterval: units.Duration(time.Hour)}, agentSetup{
		register: func(r *runner) {
			r.disp.Register("block", func(ctx context.Context, _ json.RawMessage) (any, string, error) {
				<-ctx.Done()
				return nil, "", errors.New("interrupted by stop")
			})
		},
	})
	r.waitState(t, health.Up)
	ob.Publish(t, "hl7edge/gw1/cmd/req", false, `{"id":"b0","name":"block"}`)
	response(t, ob, 0, "b0", command.Accepted)
	deadline := time.Now().Add(waitLimit)
	for len(r.a.cmdQ) != 0 { // b0 is running, not queued
		if time.Now().After(deadline) {
			t.Fatal("worker did not take b0")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := 1; i <= CommandQueue+1; i++ {
		ob.Publish(t, "hl7edge/gw1/cmd/req", false, fmt.Sprintf(`{"id":"b%d","name":"block"}`, i))
	}
	busy := ""
	for i := 1; i <= CommandQueue+1; i++ {
		id := fmt.Sprintf("b%d", i)
		_, m := ob.Log.WaitFor(t, 0, "first answer to "+id, mqtttest.JSONHas("hl7edge/gw1/cmd/res", map[string]any{"id": id}))
		if st := m.JSON(t)["status"]; st == "rejected" {
			if busy != "" {
				t.Fatalf("both %s and %s rejected; the queue holds %d", busy, id, CommandQueue)
			}
			busy = id
			if !strings.HasPrefix(fmt.Sprint(m.JSON(t)["detail"]), "busy") {
				t.Errorf("overflow detail = %v, want busy…", m.JSON(t)["detail"])
			}
		}
	}
	if busy == "" {
		t.Fatalf("%d commands behind a running one were all accepted; the queue holds %d", CommandQueue+1, CommandQueue)
	}
	r.stop(t)
	for i := 0; i <= CommandQueue+1; i++ {
		id := fmt.Sprintf("b%d", i)
		if id == busy {
			continue
		}
		ia, _ := response(t, ob, 0, id, command.Accepted)
		ifl, _ := response(t, ob, 0, id, command.Failed)
		if ifl < ia {
			t.Errorf("%s failed before it was accepted", id)
		}
	}
}

func TestDisabled(t *testing.T) {
	t.Parallel()
	reg := health.NewRegistry("gw1", "1", nil)
	disp := command.NewDispatcher(nil)
	a, err := New(Config{}, Options{DeviceID: "gw1", Registry: reg, Dispatcher: disp})
	if err != nil {
		t.Fatal(err)
	}
	if a.Enabled() || a.Session() != 0 {
		t.Fatalf("agent with no broker: enabled=%v session=%d", a.Enabled(), a.Session())
	}
	a.Alarm("x", "y") // must not block or panic
	resp := disp.Dispatch(context.Background(), command.Request{ID: "1", Name: "health"})
	if resp.Status != command.Successful {
		t.Fatalf("health command on a disabled agent: %+v", resp)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var nilAgent *Agent
	nilAgent.Alarm("x", "y")
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	reg := health.NewRegistry("gw1", "1", nil)
	disp := command.NewDispatcher(nil)
	good := Options{DeviceID: "gw1", Registry: reg, Dispatcher: disp, SessionFile: filepath.Join(dir, "s")}
	empty := filepath.Join(dir, "empty.pass")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(dir, "corrupt")
	if err := os.WriteFile(corrupt, []byte("forty-two"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		mod  func(*Options)
		want string
	}{
		{"bad device id", Config{Broker: "tcp://h:1"}, func(o *Options) { o.DeviceID = "a/b" }, "device id"},
		{"no registry", Config{Broker: "tcp://h:1"}, func(o *Options) { o.Registry = nil }, "Registry"},
		{"no session file", Config{Broker: "tcp://h:1"}, func(o *Options) { o.SessionFile = "" }, "SessionFile"},
		{"corrupt session file", Config{Broker: "tcp://h:1"}, func(o *Options) { o.SessionFile = corrupt }, "not a session counter"},
		{"missing password file", Config{Broker: "tls://h:1", Username: "u", PasswordFile: filepath.Join(dir, "nope")}, nil, "password_file"},
		{"empty password file", Config{Broker: "tls://h:1", Username: "u", PasswordFile: empty}, nil, "is empty"},
		{"missing ca file", Config{Broker: "tls://h:1", CAFile: filepath.Join(dir, "nope.pem")}, nil, "ca_file"},
		{"ca file not PEM", Config{Broker: "tls://h:1", CAFile: empty}, nil, "no PEM certificate"},
		{"invalid config", Config{Broker: "ftp://h:1"}, nil, "scheme"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			if tc.mod != nil {
				tc.mod(&o)
			}
			_, err := New(tc.cfg, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}
