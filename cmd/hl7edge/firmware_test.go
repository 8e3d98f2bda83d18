package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/firmware"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/device/trust/minisigntest"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
)

// fwWait bounds every wait of the firmware test; generous for a shared machine.
const fwWait = 60 * time.Second

// supervisor restarts the installed binary whenever it exits, as the unit's
// Restart=always does, with a clean environment.
type supervisor struct {
	t      *testing.T
	cfg    string
	mu     sync.Mutex
	cur    *exec.Cmd
	starts int
	exits  []int // exit status of each ended start (-1: killed by a signal)
	stop   bool
	logs   []string
	done   chan struct{}
}

func startSupervisor(t *testing.T, cfg string) *supervisor {
	s := &supervisor{t: t, cfg: cfg, done: make(chan struct{})}
	go s.loop()
	t.Cleanup(func() {
		s.mu.Lock()
		s.stop = true
		c := s.cur
		s.mu.Unlock()
		if c != nil && c.Process != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
		select {
		case <-s.done:
		case <-time.After(30 * time.Second):
			if c != nil {
				_ = c.Process.Kill()
			}
			t.Errorf("the gateway did not stop within 30s of SIGTERM")
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("gateway log (tail):\n%s", s.tail(400))
		}
	})
	return s
}

func (s *supervisor) loop() {
	defer close(s.done)
	for {
		s.mu.Lock()
		if s.stop {
			s.mu.Unlock()
			return
		}
		c := exec.Command(binPath, "run", "--config", s.cfg)
		var env []string
		for _, e := range os.Environ() {
			if !strings.HasPrefix(e, firmware.EnvImage+"=") {
				env = append(env, e)
			}
		}
		c.Env = append(env, "GOMEMLIMIT=200MiB")
		pr, pw, err := os.Pipe()
		if err != nil {
			s.mu.Unlock()
			return
		}
		c.Stdout, c.Stderr = pw, pw
		if err := c.Start(); err != nil {
			s.mu.Unlock()
			s.t.Errorf("start gateway: %v", err)
			return
		}
		pw.Close()
		s.cur = c
		s.starts++
		n := s.starts
		s.logs = append(s.logs, fmt.Sprintf("=== supervisor: start %d (pid %d)", n, c.Process.Pid))
		s.mu.Unlock()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			s.mu.Lock()
			s.logs = append(s.logs, sc.Text())
			s.mu.Unlock()
		}
		err = c.Wait()
		pr.Close()
		s.mu.Lock()
		s.exits = append(s.exits, c.ProcessState.ExitCode())
		s.logs = append(s.logs, fmt.Sprintf("=== supervisor: start %d ended: %v", n, err))
		s.mu.Unlock()
		time.Sleep(100 * time.Millisecond) // RestartSec, shortened
	}
}

func (s *supervisor) kill() {
	s.mu.Lock()
	c := s.cur
	s.mu.Unlock()
	_ = c.Process.Signal(syscall.SIGKILL)
}

func (s *supervisor) exitCodes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.exits...)
}

func (s *supervisor) startCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts
}

// unstructured is every line the gateway wrote that is not a slog record
// (the journal of the real unit gets all of them).
func (s *supervisor) unstructured() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range s.logs {
		if l != "" && !strings.HasPrefix(l, "time=") && !strings.HasPrefix(l, "=== supervisor:") {
			out = append(out, l)
		}
	}
	return out
}

func (s *supervisor) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.logs
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// fwRig is the firmware test's world: an HTTPS server for images, a broker,
// the operator's key and client, and the gateway's configuration.
type fwRig struct {
	t       *testing.T
	dir     string
	fwDir   string
	device  string
	srvDir  string
	srv     *httptest.Server
	sent    atomic.Int64 // bytes the slow handler has written
	op      *mqtttest.Client
	base    string
	key     minisigntest.Key
	signer  *trust.Signer
	seq     int
	v2      string // a build of this code stamped 2.0.0-test
	mllp    int
	sup     *supervisor
	cfgPath string
	broker  string
	// closedPort is where the lis destination points: nothing listens, so
	// messages for it stay in the spool across every version change.
	closedPort int
}

func (r *fwRig) publishImage(name string, data []byte, signWith minisigntest.Key) (sum, sig string) {
	r.t.Helper()
	p := filepath.Join(r.srvDir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		r.t.Fatal(err)
	}
	sig = signWith.SignFile(r.t, p, false)
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:]), sig
}

// command signs and sends a command, and returns its final answer.
func (r *fwRig) command(name string, args any, expires time.Duration) (string, map[string]any) {
	r.t.Helper()
	r.seq++
	id := fmt.Sprintf("fw-%d", r.seq)
	exp := time.Now().Add(expires)
	raw, err := json.Marshal(args)
	if err != nil {
		r.t.Fatal(err)
	}
	env, err := trust.Seal(trust.Inner{Request: command.Request{ID: id, Name: name, Args: raw, Expires: &exp}, Device: r.device},
		func(m []byte) ([]byte, error) { return r.signer.Sign(m, "firmware test"), nil })
	if err != nil {
		r.t.Fatal(err)
	}
	return id, r.sendRaw(id, env)
}

func (r *fwRig) sendRaw(id string, env []byte) map[string]any {
	r.t.Helper()
	from := r.op.Log.Mark()
	r.op.Publish(r.t, r.base+"cmd/req", false, string(env))
	_, m := r.op.Log.WaitFor(r.t, from, "the final answer to "+id, func(m mqtttest.Message) bool {
		var v map[string]any
		return m.Topic == r.base+"cmd/res" && json.Unmarshal(m.Payload, &v) == nil && v["id"] == id && v["status"] != string(command.Accepted)
	})
	return m.JSON(r.t)
}

// online waits for a birth after from and returns its version.
func (r *fwRig) online(from int) string {
	r.t.Helper()
	deadline := time.Now().Add(fwWait)
	for {
		for _, m := range r.op.Log.All()[from:] {
			if m.Topic == r.base+"status" {
				if v := m.JSON(r.t); v["state"] == "online" {
					return v["version"].(string)
				}
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no online status within %s", fwWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// firmwareState waits for the firmware topic to say want after from.
func (r *fwRig) firmwareState(from int, want firmware.Phase) map[string]any {
	r.t.Helper()
	_, m := r.op.Log.WaitFor(r.t, from, "firmware state "+string(want), mqtttest.JSONHas(r.base+"firmware", map[string]any{"state": string(want)}))
	return m.JSON(r.t)
}

func (r *fwRig) alarm(from int, kind string) string {
	r.t.Helper()
	_, m := r.op.Log.WaitFor(r.t, from, "alarm "+kind, mqtttest.JSONHas(r.base+"alarm", map[string]any{"kind": kind}))
	return m.JSON(r.t)["detail"].(string)
}

// sendHL7 sends n messages to the gateway's MLLP source, each ACKed AA.
func (r *fwRig) sendHL7(first, n int) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fwWait)
	defer cancel()
	cl, err := mllp.Dial(ctx, fmt.Sprintf("127.0.0.1:%d", r.mllp), nil)
	if err != nil {
		r.t.Fatal(err)
	}
	defer cl.Close()
	for i := first; i < first+n; i++ {
		ack, err := cl.Send(ctx, fmt.Appendf(nil, "MSH|^~\\&|LAB|WARD3|EHR|HOSP|20261130||ORU^R01|FW%04d|P|2.5.1\rPID|1||PAT%03d^^^HOSP^MR\r", i, i))
		if err != nil || !strings.Contains(string(ack), "MSA|AA|") {
			r.t.Fatalf("message %d: ACK %q, %v", i, ack, err)
		}
	}
}

// lisQueued is how many messages wait in the spool for the lis destination.
func (r *fwRig) lisQueued() float64 {
	r.t.Helper()
	_, a := r.command(command.SpoolStats, nil, time.Minute)
	d, _ := a["data"].(map[string]any)
	dests, _ := d["destinations"].(map[string]any)
	lis, _ := dests["lis"].(map[string]any)
	q, ok := lis["queued"].(float64)
	if !ok {
		r.t.Fatalf("spool-stats answer has no destinations.lis.queued: %v", a)
	}
	return q
}

func (r *fwRig) state() firmware.State {
	r.t.Helper()
	st, _, err := firmware.Load(r.fwDir)
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

func (r *fwRig) healthVersion() string {
	r.t.Helper()
	_, a := r.command(command.Health, nil, time.Minute)
	d, _ := a["data"].(map[string]any)
	v, _ := d["version"].(string)
	return v
}

// waitDestState waits until the health snapshot shows destination name in
// state want.
func (r *fwRig) waitDestState(name, want string) {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, a := r.command(command.Health, nil, time.Minute)
		d, _ := a["data"].(map[string]any)
		dests, _ := d["destinations"].([]any)
		for _, x := range dests {
			if c, _ := x.(map[string]any); c["name"] == name && c["state"] == want {
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("destination %s not %s after 30s: %v", name, want, dests)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// noPartialFiles fails when a download or a rejected image is left behind.
func (r *fwRig) noPartialFiles(keep string) {
	r.t.Helper()
	ents, _ := os.ReadDir(r.fwDir)
	for _, e := range ents {
		if n := e.Name(); n != firmware.StateFile && n != keep {
			r.t.Errorf("firmware.dir holds %s; want only %s and %q", n, firmware.StateFile, keep)
		}
	}
}

func newFWRig(t *testing.T) *fwRig {
	minisigntest.Tool(t)
	r := &fwRig{t: t, dir: t.TempDir(), device: "gw-fw"}
	r.fwDir = filepath.Join(r.dir, "state", "firmware")
	r.srvDir = filepath.Join(r.dir, "srv")
	r.base = "hl7edge/" + r.device + "/"
	if err := os.MkdirAll(filepath.Join(r.dir, "state"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(r.srvDir, 0o755); err != nil {
		t.Fatal(err)
	}
	r.v2 = filepath.Join(r.dir, "v2", "hl7edge")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=2.0.0-test", "-o", r.v2, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build v2: %v\n%s", err, out)
	}

	ca, err := throwawayca.NewCA("firmware test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("127.0.0.1", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(r.dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	files := http.FileServer(http.Dir(r.srvDir))
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		name, slow := strings.CutPrefix(req.URL.Path, "/slow/")
		if !slow {
			files.ServeHTTP(w, req)
			return
		}
		b, err := os.ReadFile(filepath.Join(r.srvDir, filepath.Base(name)))
		if err != nil {
			http.NotFound(w, req)
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		for len(b) > 0 {
			n := min(len(b), 16<<10)
			if _, err := w.Write(b[:n]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			r.sent.Add(int64(n))
			b = b[n:]
			time.Sleep(20 * time.Millisecond)
		}
	}))
	r.srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}
	r.srv.StartTLS()
	t.Cleanup(r.srv.Close)

	broker := mqtttest.StartMochi(t, mqtttest.BrokerOptions{})
	r.broker = broker.URL
	r.op = mqtttest.Subscribe(t, broker.URL, r.base+"#", mqtttest.ClientOptions{})
	r.key = minisigntest.NewKey(t)
	if r.signer, err = trust.LoadSigner(r.key.SecFile, nil); err != nil {
		t.Fatal(err)
	}
	r.mllp = freePort(t)
	r.closedPort = freePort(t)
	r.cfgPath = filepath.Join(r.dir, "hl7edge.yaml")
	if err := os.WriteFile(r.cfgPath, []byte(r.config(r.mllp)), 0o640); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *fwRig) config(mllpPort int) string {
	return fmt.Sprintf(`device: {id: %s, board: sim}
spool: {dir: %s}
admin: {socket: %s}
sources:
  - {name: in, type: mllp, listen: "127.0.0.1:%d"}
destinations:
  - {name: archive, type: file, dir: %s}
  - {name: lis, type: mllp, address: "127.0.0.1:%d"}
mqtt: {broker: "%s", health_interval: 1s}
trust:
  keys: [%s]
firmware:
  dir: %s
  ca_file: %s
  trial: 8s
`, r.device, filepath.Join(r.dir, "state", "spool"), filepath.Join(r.dir, "admin.sock"), mllpPort,
		filepath.Join(r.dir, "archive"), r.closedPort, r.broker,
		r.key.Pub, r.fwDir, filepath.Join(r.dir, "ca.pem"))
}

// TestFirmwareUpdate drives the real binaries (the installed build, version
// "dev", and a build stamped 2.0.0-test) under a supervisor that restarts
// like Restart=always, with a real broker and a local HTTPS server:
// refusals change nothing; a good signed image is switched to and kept
// after its trial; an image that cannot start and one that starts
// unhealthy are rolled back by themselves with the alarm; SIGKILL during a
// download and during the switch leaves a gateway on one whole version.
func TestFirmwareUpdate(t *testing.T) {
	r := newFWRig(t)
	v2, err := os.ReadFile(r.v2)
	if err != nil {
		t.Fatal(err)
	}
	from := r.op.Log.Mark()
	r.sup = startSupervisor(t, r.cfgPath)
	if v := r.online(from); v != "dev" {
		t.Fatalf("the installed build came up as %q, want dev", v)
	}
	url := r.srv.URL + "/"

	// Refusals: each answered failed or rejected with its reason; the
	// gateway keeps running the installed version without a restart.
	goodSum, goodSig := r.publishImage("v2", v2, r.key)
	tampered := append([]byte{}, v2...)
	tampered[len(tampered)/2] ^= 0x01
	tamperedSum, _ := r.publishImage("tampered", tampered, r.key)
	foreign := minisigntest.NewKey(t)
	_, foreignSig := r.publishImage("foreign", v2, foreign)
	args := func(file, sum, sig string) map[string]any {
		return map[string]any{"url": url + file, "version": "2.0.0-test", "sha256": sum, "minisig": sig}
	}
	wrongSum := strings.Repeat("ab", 32)
	cases := []struct {
		what string
		args map[string]any
		want string
	}{
		{"tampered image", args("tampered", tamperedSum, goodSig), "signature refused"},
		{"wrong sha256", args("v2", wrongSum, goodSig), "sha256"},
		{"foreign key", args("foreign", goodSum, foreignSig), "not in trust.keys"},
	}
	starts := r.sup.startCount()
	var replay []byte
	for _, c := range cases {
		fromC := r.op.Log.Mark()
		_, a := r.command(command.FirmwareUpdate, c.args, time.Minute)
		if a["status"] != string(command.Failed) || !strings.Contains(a["detail"].(string), c.want) {
			t.Errorf("%s: %v, want failed naming %q", c.what, a, c.want)
		}
		if st := r.firmwareState(fromC, firmware.Rejected); !strings.Contains(st["reason"].(string), c.want) {
			t.Errorf("%s: firmware topic %v, want the reason", c.what, st)
		}
	}
	exp := time.Now().Add(-time.Second)
	rawArgs, _ := json.Marshal(args("v2", goodSum, goodSig))
	expired, _ := trust.Seal(trust.Inner{Request: command.Request{ID: "fw-expired", Name: command.FirmwareUpdate, Args: rawArgs, Expires: &exp}, Device: r.device},
		func(m []byte) ([]byte, error) { return r.signer.Sign(m, "t"), nil })
	if a := r.sendRaw("fw-expired", expired); a["status"] != string(command.Rejected) || !strings.Contains(a["detail"].(string), "expired") {
		t.Errorf("expired command: %v, want rejected as expired", a)
	}
	// The replay: an envelope already obeyed (the wrong-sha256 one) sent again.
	exp = time.Now().Add(time.Minute)
	wrongArgs, _ := json.Marshal(args("v2", wrongSum, goodSig))
	replay, _ = trust.Seal(trust.Inner{Request: command.Request{ID: "fw-replay", Name: command.FirmwareUpdate, Args: wrongArgs, Expires: &exp}, Device: r.device},
		func(m []byte) ([]byte, error) { return r.signer.Sign(m, "t"), nil })
	r.sendRaw("fw-replay", replay)
	if a := r.sendRaw("fw-replay", replay); a["status"] != string(command.Rejected) || !strings.Contains(a["detail"].(string), "already used") {
		t.Errorf("replayed command: %v, want rejected as already used", a)
	}
	if r.sup.startCount() != starts || r.healthVersion() != "dev" {
		t.Fatalf("a refused update restarted the gateway or changed its version")
	}
	r.noPartialFiles("")

	// Messages spooled for a destination that is down stay spooled, once,
	// across every switch and roll-back below.
	r.sendHL7(1, 3)
	if q := r.lisQueued(); q != 3 {
		t.Fatalf("lis queued %v before the update, want 3", q)
	}
	// The trial compares what is up before the update with what is up
	// after: lis must already be down (its receiver is closed) when the
	// update starts, or the trial would count lis going down against the
	// new version, depending on which came first.
	r.waitDestState("lis", "down")

	// A good update: switched, on trial, committed, and kept across a restart.
	from = r.op.Log.Mark()
	id, a := r.command(command.FirmwareUpdate, args("v2", goodSum, goodSig), time.Minute)
	if a["status"] != string(command.Successful) {
		t.Fatalf("good update: %v", a)
	}
	if v := r.online(from); v != "2.0.0-test" {
		t.Fatalf("after the update the gateway came up as %q, want 2.0.0-test", v)
	}
	if codes := r.sup.exitCodes(); len(codes) != 1 || codes[0] != exitRelaunch {
		t.Errorf("the switch ended the old version with exit statuses %v, want [%d] (the unit's RestartForceExitStatus)", codes, exitRelaunch)
	}
	if st := r.firmwareState(from, firmware.Trial); st["version"] != "2.0.0-test" || st["previous"] != "dev" || st["command"] != id {
		t.Errorf("trial state %v", st)
	}
	st := r.firmwareState(from, firmware.Committed)
	if st["running"] != "2.0.0-test" {
		t.Errorf("committed state %v, want running 2.0.0-test", st)
	}
	r.alarm(from, firmware.AlarmFirmwareCommitted)
	if v := r.healthVersion(); v != "2.0.0-test" {
		t.Errorf("health snapshot version %q after the update, want 2.0.0-test", v)
	}
	// What the update did is in the log as records, and nothing else is
	// (the system rig found the manager's records dropped and the switch
	// announced by a plain line).
	for _, want := range []string{`msg="firmware download"`, `msg="firmware verified; relaunching into the trial"`, `msg="firmware committed"`} {
		if !strings.Contains(r.sup.tail(100000), want) {
			t.Errorf("no %s record in the gateway's log", want)
		}
	}
	if u := r.sup.unstructured(); len(u) > 0 {
		t.Errorf("the update wrote %d lines outside slog, first %q", len(u), u[0])
	}
	from = r.op.Log.Mark()
	r.sup.kill()
	if v := r.online(from); v != "2.0.0-test" {
		t.Fatalf("after a restart the committed update came up as %q", v)
	}
	r.noPartialFiles("hl7edge-2.0.0-test")

	// An image that cannot start: rolled back to 2.0.0-test by the launcher.
	brokenSum, brokenSig := r.publishImage("broken", []byte("#!/bin/sh\necho broken image >&2\nexit 3\n"), r.key)
	from = r.op.Log.Mark()
	if _, a := r.command(command.FirmwareUpdate, map[string]any{"url": url + "broken", "version": "3.0-broken", "sha256": brokenSum, "minisig": brokenSig}, time.Minute); a["status"] != string(command.Successful) {
		t.Fatalf("broken image update: %v", a)
	}
	detail := r.alarm(from, firmware.AlarmFirmwareRolledBack)
	if !strings.Contains(detail, "3.0-broken") || !strings.Contains(detail, "stopped during its trial") {
		t.Errorf("rollback alarm %q: want the version and the reason", detail)
	}
	if r.state().State != firmware.RolledBack || r.healthVersion() != "2.0.0-test" {
		t.Errorf("after the broken image: state %s, version %s; want rolled_back on 2.0.0-test", r.state().State, r.healthVersion())
	}

	// An image that starts but is unhealthy (its MLLP source cannot listen):
	// rolled back at the end of its trial by itself.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	badCfg := filepath.Join(r.dir, "unhealthy.yaml")
	if err := os.WriteFile(badCfg, []byte(r.config(held.Addr().(*net.TCPAddr).Port)), 0o640); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\nexec %s run --config %s\n", r.v2, badCfg)
	sickSum, sickSig := r.publishImage("sick", []byte(script), r.key)
	from = r.op.Log.Mark()
	if _, a := r.command(command.FirmwareUpdate, map[string]any{"url": url + "sick", "version": "4.0-unhealthy", "sha256": sickSum, "minisig": sickSig}, time.Minute); a["status"] != string(command.Successful) {
		t.Fatalf("unhealthy image update: %v", a)
	}
	detail = r.alarm(from, firmware.AlarmFirmwareRolledBack)
	if !strings.Contains(detail, "4.0-unhealthy") || !strings.Contains(detail, "source in is not up") {
		t.Errorf("rollback alarm %q: want the version and the source that was down", detail)
	}
	held.Close()
	if v := r.healthVersion(); v != "2.0.0-test" {
		t.Errorf("after the unhealthy image the version is %q, want 2.0.0-test", v)
	}
	if q := r.lisQueued(); q != 3 {
		t.Errorf("lis queued %v after three version changes and two roll-backs, want the same 3", q)
	}
	r.sendHL7(4, 1)
	waitFor(t, "the four messages in the archive", func() bool {
		m, _ := filepath.Glob(filepath.Join(r.dir, "archive", "*.hl7"))
		return len(m) == 4
	})

	// SIGKILL during the download: rejected at the next start, nothing changed.
	dev, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	devSum, devSig := r.publishImage("dev", dev, r.key)
	r.sent.Store(0)
	r.seq++
	slowID := fmt.Sprintf("fw-%d", r.seq)
	exp = time.Now().Add(time.Minute)
	devArgs, _ := json.Marshal(map[string]any{"url": url + "slow/dev", "version": "1.5-dev", "sha256": devSum, "minisig": devSig, "allow_downgrade": true})
	env, _ := trust.Seal(trust.Inner{Request: command.Request{ID: slowID, Name: command.FirmwareUpdate, Args: devArgs, Expires: &exp}, Device: r.device},
		func(m []byte) ([]byte, error) { return r.signer.Sign(m, "t"), nil })
	r.op.Publish(t, r.base+"cmd/req", false, string(env))
	waitFor(t, "part of the image downloaded", func() bool { return r.sent.Load() > 256<<10 })
	if s := r.state(); s.State != firmware.Downloading {
		t.Fatalf("state during the download: %s", s.State)
	}
	from = r.op.Log.Mark()
	r.sup.kill()
	if v := r.online(from); v != "2.0.0-test" {
		t.Fatalf("after SIGKILL during the download the gateway came up as %q, want 2.0.0-test", v)
	}
	if s := r.state(); s.State != firmware.Rejected || !strings.Contains(s.Reason, "stopped while downloading") {
		t.Errorf("after SIGKILL during the download: %s %q, want rejected saying so", s.State, s.Reason)
	}
	r.noPartialFiles("hl7edge-2.0.0-test")

	// SIGKILL during the switch (the trial is recorded, the old version is
	// stopping): the next start runs one whole version and the update
	// settles by itself.
	from = r.op.Log.Mark()
	if _, a := r.command(command.FirmwareUpdate, map[string]any{"url": url + "dev", "version": "1.5-dev", "sha256": devSum, "minisig": devSig, "allow_downgrade": true}, time.Minute); a["status"] != string(command.Successful) {
		t.Fatalf("update to 1.5-dev: %v", a)
	}
	// The answer comes after the trial is recorded and before the old
	// process has exited: kill it now.
	r.sup.kill()
	v := r.online(from)
	if v != "dev" && v != "2.0.0-test" {
		t.Fatalf("after SIGKILL during the switch the gateway came up as %q", v)
	}
	waitFor(t, "the update settled", func() bool {
		s := r.state()
		return s.State == firmware.Committed || s.State == firmware.RolledBack
	})
	final := r.state()
	// The alarm comes from the version that runs once the update settled.
	kind, want := firmware.AlarmFirmwareCommitted, "dev"
	if final.State == firmware.RolledBack {
		kind, want = firmware.AlarmFirmwareRolledBack, "2.0.0-test"
	}
	r.alarm(from, kind)
	if v := r.healthVersion(); v != want {
		t.Errorf("after the switch settled as %s the gateway runs %q, want %q", final.State, v, want)
	}
	t.Logf("SIGKILL during the switch: state %s (%s), running %s", final.State, final.Reason, want)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(fwWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", fwWait, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
