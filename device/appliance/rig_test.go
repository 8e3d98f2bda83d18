package appliance_test

// The rig shared by the appliance tests: a real in-process mochi-mqtt broker
// that records every PUBLISH it accepts, a real paho client playing the
// fleet operator (it sends on cmd/req and reads cmd/res, status and alarm),
// the whole appliance run in-process from a YAML file on disk, and an MLLP
// sender. Nothing is mocked: bytes cross loopback TCP and a unix socket, the
// spool is a real Badger directory.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/board"
	"github.com/hl7edge/hl7edge/board/sim"
	"github.com/hl7edge/hl7edge/device/admin"
	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/pipeline/logtest"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// waitLimit bounds every wait; generous because the machine is shared and
// the tests run with -race.
const waitLimit = 20 * time.Second

// Patient data in every test message. None of it may reach MQTT, the log
// or a command answer.
const (
	phiName = "PHIMARKER^TEST"
	phiMRN  = "MRN-PHI-88417"
	phiAddr = "12 PHISTREET"
)

var phiMarkers = []string{"PHIMARKER", phiMRN, "PHISTREET", logtest.Marker}

const testVersion = "9.9.9-test"

// hl7Message is an ADT^A01 with control ID id and patient data in PID.
func hl7Message(id string) []byte {
	return []byte("MSH|^~\\&|ADT|WARD3|EHR|HOSP|20260101120000||ADT^A01|" + id + "|P|2.5\r" +
		"EVN|A01|20260101120000\r" +
		"PID|1||" + phiMRN + "^^^HOSP^MR||" + phiName + "||19700101|F|||" + phiAddr + "^^LEEDS\r" +
		"PV1|1|I|ICU^1^1\r")
}

// containsPHI names the first patient-data marker in s, or "".
func containsPHI(s string) string {
	for _, m := range phiMarkers {
		if strings.Contains(s, m) {
			return m
		}
	}
	return ""
}

// ---------------------------------------------------------------------------
// Waiting.

// waitUntil polls cond until it holds, failing the test after limit.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// The broker.

// broker is an in-process mochi broker that records every PUBLISH it
// accepts, from any client.
type broker struct {
	*mqtttest.Broker
	allowPHI bool // only for the test that proves the check can fail
}

// startBroker runs a broker until the test ends. When the test ends it
// checks that no payload the broker saw, during the whole test, carried
// patient data.
func startBroker(t *testing.T) *broker {
	t.Helper()
	b := &broker{}
	// Registered before the broker's own cleanup, so it runs after it:
	// after the appliance has stopped and published its offline status.
	t.Cleanup(func() {
		if b.Broker != nil {
			b.assertNoPHI(t)
		}
	})
	b.Broker = mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	return b
}

// leaks lists every recorded payload that holds patient data.
func (b *broker) leaks() []string {
	var out []string
	for _, m := range b.Log.All() {
		if mk := containsPHI(string(m.Payload)); mk != "" {
			out = append(out, fmt.Sprintf("%s carries %q: %q", m.Topic, mk, m.Payload))
		}
	}
	return out
}

// assertNoPHI fails the test for every recorded payload holding patient data.
func (b *broker) assertNoPHI(t *testing.T) {
	t.Helper()
	if b.allowPHI {
		return
	}
	for _, l := range b.leaks() {
		t.Errorf("MQTT payload on %s", l)
	}
	if len(b.Log.All()) == 0 {
		t.Errorf("the broker recorded no publishes at all: the privacy check saw nothing")
	}
}

// ---------------------------------------------------------------------------
// The operator's MQTT client.

// operator is a real paho client subscribed to everything under the device.
type operator struct {
	*mqtttest.Client
	base   string // hl7edge/<device>/
	device string
	seq    atomic.Int64
	// signer signs the privileged commands (config-apply, dead-purge) as
	// the fleet operator does; nil sends them unsigned.
	signer *trust.Signer
}

func newOperator(t *testing.T, url, device string) *operator {
	t.Helper()
	base := "hl7edge/" + device + "/"
	return &operator{Client: mqtttest.Subscribe(t, url, base+"#", mqtttest.ClientOptions{}), base: base, device: device}
}

// operator is the rig's operator, holding the key the rig's configuration trusts.
func (r *rig) operator(t *testing.T) *operator {
	t.Helper()
	op := newOperator(t, r.broker.URL, r.device)
	op.signer = r.signer
	return op
}

// privileged are the commands the operator signs.
var privileged = map[string]bool{command.ConfigApply: true, command.DeadPurge: true, command.FirmwareUpdate: true,
	command.SpoolSkip: true, command.UndeliverablePurge: true, command.Replay: true, command.Pause: true}

// response is a cmd/res answer with its data kept raw.
type response struct {
	ID     string          `json:"id"`
	Name   string          `json:"name"`
	Status command.Status  `json:"status"`
	Detail string          `json:"detail"`
	Data   json.RawMessage `json:"data"`
}

// answer is what the operator saw for one command.
type answer struct {
	response
	accepted bool // an "accepted" came before the final answer
}

func (a answer) String() string {
	d := string(a.Data)
	if len(d) > 400 {
		d = d[:400] + "…"
	}
	return fmt.Sprintf("%s %s: %s %q data=%s (accepted first: %v)", a.ID, a.Name, a.Status, a.Detail, d, a.accepted)
}

// decode unmarshals the answer's data, failing the test when it does not fit.
func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.Data, v); err != nil {
		t.Fatalf("%s: data does not decode into %T: %v", a, v, err)
	}
}

type cmdOpt func(map[string]any)

// unsigned sends a privileged command without its signature.
func unsigned() cmdOpt { return func(m map[string]any) { m["-unsigned"] = true } }

// signed signs a command that is not privileged, as an operator may.
func signed() cmdOpt { return func(m map[string]any) { m["-signed"] = true } }

func expires(at time.Time) cmdOpt {
	return func(m map[string]any) { m["expires"] = at.UTC().Format(time.RFC3339Nano) }
}

// send publishes a command on cmd/req and waits for its final answer on cmd/res.
func (op *operator) send(t *testing.T, name string, args any, opts ...cmdOpt) answer {
	t.Helper()
	id := fmt.Sprintf("cmd-%d", op.seq.Add(1))
	req := map[string]any{"id": id, "name": name, "expires": time.Now().Add(time.Minute).UTC().Format(time.RFC3339Nano)}
	if args != nil {
		req["args"] = args
	}
	for _, o := range opts {
		o(req)
	}
	sign := (privileged[name] || req["-signed"] != nil) && op.signer != nil && req["-unsigned"] == nil
	delete(req, "-unsigned")
	delete(req, "-signed")
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if sign {
		req["device"] = op.device
		inner, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err = json.Marshal(trust.Envelope{Signed: base64.StdEncoding.EncodeToString(inner), Minisig: string(op.signer.Sign(inner, "appliance test"))})
		if err != nil {
			t.Fatal(err)
		}
	}
	return op.sendRaw(t, id, name, b)
}

// sendRaw publishes payload on cmd/req and waits for the final answer
// carrying id ("" for an answer without one).
func (op *operator) sendRaw(t *testing.T, id, name string, b []byte) answer {
	t.Helper()
	from := op.Log.Mark()
	op.Publish(t, op.base+"cmd/req", false, string(b))
	return op.answer(t, from, id, name)
}

// answer waits for the final answer carrying id published after from.
func (op *operator) answer(t *testing.T, from int, id, name string) answer {
	t.Helper()
	var a answer
	_, m := op.Log.WaitFor(t, from, "the final answer to "+id+" ("+name+")", func(m mqtttest.Message) bool {
		if m.Topic != op.base+"cmd/res" {
			return false
		}
		var r response
		if json.Unmarshal(m.Payload, &r) != nil || r.ID != id {
			return false
		}
		if r.Status == command.Accepted {
			a.accepted = true
			return false
		}
		return true
	})
	if err := json.Unmarshal(m.Payload, &a.response); err != nil {
		t.Fatal(err)
	}
	return a
}

// must sends a command and fails the test unless it was accepted and then successful.
func (op *operator) must(t *testing.T, name string, args any, opts ...cmdOpt) answer {
	t.Helper()
	a := op.send(t, name, args, opts...)
	if a.Status != command.Successful || !a.accepted {
		t.Fatalf("%s: want accepted then successful", a)
	}
	return a
}

// health asks for a snapshot over MQTT.
func (op *operator) health(t *testing.T) health.Snapshot {
	t.Helper()
	var s health.Snapshot
	op.must(t, command.Health, nil).decode(t, &s)
	return s
}

// waitState polls the health command until the component is in want.
func (op *operator) waitState(t *testing.T, kind health.Kind, name string, want health.State) health.Snapshot {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		s := op.health(t)
		c, ok := s.Component(kind, name)
		if ok && c.State == want {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s is %q (present: %v), want %q, after %s", kind, name, c.State, ok, want, waitLimit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAlarm waits for an alarm of kind published at or after from.
func (op *operator) waitAlarm(t *testing.T, from int, kind string) map[string]any {
	t.Helper()
	_, m := op.Log.WaitFor(t, from, "alarm "+kind, mqtttest.JSONHas(op.base+"alarm", map[string]any{"kind": kind}))
	var v map[string]any
	if err := json.Unmarshal(m.Payload, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// alarms lists the kinds of every alarm seen since from.
func (op *operator) alarms(from int) []string {
	var out []string
	for _, m := range op.Log.All()[from:] {
		var v struct{ Kind string }
		if m.Topic == op.base+"alarm" && json.Unmarshal(m.Payload, &v) == nil {
			out = append(out, v.Kind)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// The box's configuration.

// rig is one test's working directory and addresses.
type rig struct {
	t        *testing.T
	dir      string
	device   string
	cfgPath  string
	socket   string
	spool    string
	archive  string // the file destination's directory
	mllpPort int    // the MLLP source
	broker   *broker
	signer   *trust.Signer // the operator's key; its public half is in trust.keys
	pub      string
}

func newRig(t *testing.T, device string) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{
		t: t, dir: dir, device: device,
		cfgPath: filepath.Join(dir, "hl7edge.yaml"),
		socket:  filepath.Join(dir, "admin.sock"),
		spool:   filepath.Join(dir, "spool"),
		archive: filepath.Join(dir, "archive"),
	}
	r.broker = startBroker(t)
	r.mllpPort = mqtttest.FreePort(t)
	var err error
	if r.signer, r.pub, err = trust.GenerateSigner(); err != nil {
		t.Fatal(err)
	}
	return r
}

// yaml is a whole configuration file: one MLLP source listening on port,
// the archive file destination, then extra destinations (YAML list items
// indented by two spaces).
func (r *rig) yaml(port int, extraDestinations string) string {
	return fmt.Sprintf(`# hl7edge test configuration
device:
  id: %s
  board: sim
spool:
  dir: %s
admin:
  socket: %s
log:
  level: debug
sources:
  - name: in
    type: mllp
    listen: 127.0.0.1:%d
destinations:
  - name: archive
    type: file
    dir: %s
%smqtt:
  broker: %s
trust:
  keys: [%s]
`, r.device, r.spool, r.socket, port, r.archive, extraDestinations, r.broker.URL, r.pub)
}

func (r *rig) writeConfig(text string) {
	r.t.Helper()
	if _, err := config.Parse([]byte(text)); err != nil {
		r.t.Fatalf("the test's own configuration is invalid: %v\n%s", err, text)
	}
	if err := os.WriteFile(r.cfgPath, []byte(text), 0o640); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) configFile() string {
	r.t.Helper()
	b, err := os.ReadFile(r.cfgPath)
	if err != nil {
		r.t.Fatal(err)
	}
	return string(b)
}

// files counts the .hl7 files in dir.
func files(t *testing.T, dir string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.hl7"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// ---------------------------------------------------------------------------
// The running appliance.

type running struct {
	logs   *logtest.Buffer
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	boxes  []*appliance.Box // one per (re)start, in order
}

// starts is how many times a Box has been started.
func (rn *running) starts() int {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return len(rn.boxes)
}

// box is the Box of the n-th start (1-based).
func (rn *running) box(n int) *appliance.Box {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.boxes[n-1]
}

// waitStarts waits until the appliance has started n Boxes.
func (rn *running) waitStarts(t *testing.T, n int) *appliance.Box {
	t.Helper()
	waitUntil(t, waitLimit, fmt.Sprintf("start number %d of the box", n), func() bool { return rn.starts() >= n })
	return rn.box(n)
}

// start runs the appliance on the rig's configuration file until the test
// ends; the cleanup proves Run returns nil soon after its context ends and
// that the log never held patient data.
func (r *rig) start(o appliance.Options) *running {
	t := r.t
	t.Helper()
	rn := &running{logs: &logtest.Buffer{}, done: make(chan error, 1)}
	o.ConfigPath = r.cfgPath
	o.Version = testVersion
	o.LogOut = rn.logs
	if o.Board == nil {
		o.Board = func(*config.Config, *slog.Logger) (board.Board, error) { return sim.New(sim.Options{}), nil }
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = 20 * time.Millisecond
	}
	o.Started = func(b *appliance.Box) {
		rn.mu.Lock()
		rn.boxes = append(rn.boxes, b)
		rn.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	rn.cancel = cancel
	go func() { rn.done <- appliance.Run(ctx, o) }()
	t.Cleanup(func() {
		rn.stop(t)
		if t.Failed() {
			logs := rn.logs.String()
			if len(logs) > 20000 {
				logs = "…" + logs[len(logs)-20000:]
			}
			t.Logf("appliance log (tail):\n%s", logs)
		}
		for i, line := range strings.Split(rn.logs.String(), "\n") {
			if mk := containsPHI(line); mk != "" {
				t.Errorf("appliance log line %d carries patient data %q: %s", i+1, mk, line)
			}
		}
	})
	return rn
}

// stop cancels Run and checks it returns nil in time (idempotent).
func (rn *running) stop(t *testing.T) {
	t.Helper()
	rn.cancel()
	select {
	case err, ok := <-rn.done:
		if !ok {
			return
		}
		close(rn.done)
		if err != nil {
			t.Errorf("appliance.Run returned %v after its context ended, want nil", err)
		}
	case <-time.After(waitLimit):
		t.Errorf("appliance.Run did not return within %s of its context ending", waitLimit)
	}
}

// waitOnline waits for the retained online birth of a session after from,
// and returns the session number.
func (op *operator) waitOnline(t *testing.T, from int) (int, uint64) {
	t.Helper()
	i, m := op.Log.WaitFor(t, from, "an online status", mqtttest.JSONHas(op.base+"status", map[string]any{"state": "online"}))
	var st struct {
		State   string `json:"state"`
		Session uint64 `json:"session"`
		Version string `json:"version"`
	}
	if err := json.Unmarshal(m.Payload, &st); err != nil {
		t.Fatal(err)
	}
	if st.Session == 0 || st.Version != testVersion {
		t.Fatalf("birth %s: want a session number > 0 and version %q", m.Payload, testVersion)
	}
	return i, st.Session
}

// ---------------------------------------------------------------------------
// MLLP and the admin socket.

// sendHL7 sends one message to the box's MLLP source and returns the ACK.
func sendHL7(t *testing.T, port int, msg []byte) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := mllp.Dial(ctx, fmt.Sprintf("127.0.0.1:%d", port), nil)
	if err != nil {
		return "", err
	}
	defer c.Close()
	ack, err := c.Send(ctx, msg)
	return string(ack), err
}

// mustSendHL7 sends a message, retrying the connection while the source
// starts, and fails unless the ACK is AA.
func mustSendHL7(t *testing.T, port int, msg []byte) {
	t.Helper()
	var ack string
	var err error
	waitUntil(t, waitLimit, fmt.Sprintf("an ACK from the MLLP source on port %d", port), func() bool {
		ack, err = sendHL7(t, port, msg)
		return err == nil
	})
	if !strings.Contains(ack, "MSA|AA|") {
		t.Fatalf("ACK %q: want MSA-1 AA", ack)
	}
}

// adminCall runs one command through the admin socket.
func (r *rig) adminCall(t *testing.T, name string, args any) command.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := command.Request{ID: "admin-" + name, Name: name}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			t.Fatal(err)
		}
		req.Args = b
	}
	// The admin server starts beside the box, so a box may be up a moment
	// before its socket listens; only that is waited out.
	for {
		resp, err := admin.Call(ctx, r.socket, req)
		if errors.Is(err, admin.ErrNoDaemon) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("admin %s: %v", name, err)
		}
		return resp
	}
}
