package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

// soakConfig is the gateway under test. max_bytes is small so that the
// quota fault can fill it in seconds with the upstream down; segments keep
// their default size, as in the field.
const soakConfig = `device: {id: soak-gw, board: sim}
spool: {dir: {{DIR}}/spool, max_bytes: 24MiB}
admin: {socket: {{DIR}}/admin.sock}
log: {level: info}
sources:
  - {name: mllp-in, type: mllp, listen: "{{MLLP}}", max_connections: 16, idle_timeout: 5m}
  - {name: pump-line, type: serial, device: "{{DIR}}/ttySOAK1", baud: 115200, framing: mllp, reopen_interval: 1s}
  - {name: analyser, type: serial, device: "{{DIR}}/ttySOAK2", baud: 115200, framing: lis01-a2, reopen_interval: 1s}
destinations:
  - name: tests-bin
    type: rubbish
    match:
      any: ["MSH-11.1 in T"]
  - name: ehr
    type: webservice
    url: https://{{UPSTREAM}}/hl7/ping
    logon_id: soak-gw
    password_file: {{DIR}}/ehr.pass
    ca_file: {{DIR}}/ca.pem
    allowed_hosts: ["127.0.0.1"]
    max_backoff: 2s
    timeout: 10s
    match:
      all: ["MSH-9.1 in ADT,ORU"]
  - name: archive
    type: file
    dir: {{DIR}}/archive
mqtt:
  broker: tcp://{{BROKER}}
  health_interval: 2s
  keepalive: 5s
`

const (
	soakDevice   = "soak-gw"
	soakPassword = "soak-upstream-secret"
	soakMaxBytes = 24 << 20
)

// soakCeilings are the ceilings of promise 5 (docs/design.md) as the soak checks
// them: hard limits at every sample, and no growth from the first half of
// the soak to the second beyond a quarter plus some slack.
var soakCeilings = soakLimits{
	warmUp: 20 * time.Second,
	maxRSS: 128 << 20, maxFDs: 200, maxThreads: 64,
	maxSpoolBytes: soakMaxBytes + 1<<20, maxSpoolDisk: 2*soakMaxBytes + 32<<20,
	growth:   1.25,
	slackRSS: 12 << 20, slackFDs: 16, slackThread: 8,
	lowSpool: 2 << 20, slackDisk: 24 << 20,
	minGrowthSpan: 8 * time.Minute,
}

// TestSoak runs the real binary for SOAK_SECONDS under faults and proves
// the promises from a ledger of everything the senders were told.
//
// The test process plays every peer on loopback: MLLP senders over TCP, a
// serial device speaking MLLP and a laboratory analyser speaking LIS01-A2 on
// kernel pseudo-terminals, the reference web service over HTTPS, and an
// MQTT broker with an observer. A fault driver (seeded, logged) SIGKILLs
// and restarts the gateway every 15-30 s (every third kill is a SIGQUIT,
// the Go runtime's crash path, whose dump counts the goroutines) and, in a
// shuffled cycle, takes the upstream down for 8-12 s, fills the spool to its
// quota (upstream down, two senders of 96 KiB messages until someone gets
// AE: the archive, a file destination, always drains, so the ehr queue is
// what fills the spool), restarts the broker, and makes the web service
// misbehave harder for 10 s (HTTP 500, EXCEPTION, ACKs naming the wrong
// GUID, delays); milder web faults run throughout.
//
// Then faults stop, senders settle their last message, the spool drains,
// the gateway stops on SIGTERM with exit 0, and the ledger is checked:
// every AA'd control ID is at every destination it matched, byte for byte,
// under one GUID, first arriving upstream in the order its stream was
// ACKed; refused and T messages are nowhere; nothing arrives unsent. The
// daemon's RSS, threads, open files and spool are sampled every 2 s and
// must stay under ceilings and not grow. MQTT must carry the online status,
// the Last Will of killed sessions, and never the PHI marker, which must
// not be in the daemon's logs either.
//
// Reproduce a run with SOAK_SEED=<the seed it printed>.
func TestSoak(t *testing.T) {
	secs := os.Getenv("SOAK_SECONDS")
	if secs == "" {
		t.Skip("the soak runs only when SOAK_SECONDS is set (make soak)")
	}
	if raceEnabled {
		t.Skip("the soak runs the real binary for minutes; run it without -race (make soak)")
	}
	n, err := strconv.Atoi(secs)
	if err != nil || n < 30 {
		t.Fatalf("SOAK_SECONDS=%q: want a whole number of seconds, at least 30 (180 is the default of make soak)", secs)
	}
	faultPhase := time.Duration(n) * time.Second
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SOAK_SEED"); s != "" {
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("SOAK_SEED=%q: want an unsigned integer", s)
		}
	}
	t.Logf("soak: %s of faults, seed %d (SOAK_SEED=%d reproduces the fault schedule)", faultPhase, seed, seed)
	r := newSoakRun(t, seed)
	r.run(faultPhase)
}

// soakLife is one daemon process.
type soakLife struct {
	d       *daemon
	started time.Time
}

// soakWill is a Last Will the broker owes us: the killed process had
// published online with this session on the current broker.
type soakWill struct {
	session uint64
	killed  time.Time
}

type soakRun struct {
	t      *testing.T
	dir    string
	cfg    string
	socket string
	mllp   string
	start  time.Time
	seed   uint64

	ledger   *soakLedger
	ref      *refserver.Server
	up       *soakUpstream
	broker   *soakBroker
	obs      *soakObserver
	ptys     []*soakPTY
	fillOn   atomic.Bool
	stopSend atomic.Bool
	senders  []*soakSender

	cur        soakLife
	pid        atomic.Int64
	kills      int
	quits      int
	goroutines []int // counted in each SIGQUIT dump
	wills      []soakWill
	logLines   int
	logErrors  int

	sampleMu sync.Mutex
	samples  []soakSample

	chaos      *soakChaos
	probeTime  time.Duration
	probeStuck bool
}

func newSoakRun(t *testing.T, seed uint64) *soakRun {
	dir := t.TempDir()
	r := &soakRun{t: t, dir: dir, cfg: filepath.Join(dir, "hl7edge.yaml"), socket: filepath.Join(dir, "admin.sock"),
		ledger: newSoakLedger(), seed: seed}
	ca, err := throwawayca.NewCA("soak CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("127.0.0.1", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM, 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "ehr.pass"), []byte(soakPassword+"\n"), 0o600))

	r.ref, err = refserver.New(refserver.Config{StoreDir: filepath.Join(dir, "store"), Logon: soakDevice, Password: soakPassword, Faults: soakMildFaults})
	must(t, err)
	t.Cleanup(func() { r.ref.Close() })
	r.up, err = newSoakUpstream(r.ref, leaf.TLS, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	must(t, err)
	t.Cleanup(r.up.stop)

	r.broker = &soakBroker{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	must(t, r.broker.start())
	t.Cleanup(r.broker.stop)
	r.obs = newSoakObserver("tcp://"+r.broker.addr, soakDevice, []byte(soakPHI))
	t.Cleanup(r.obs.close)

	for i := 1; i <= 2; i++ {
		p, err := newSoakPTY(filepath.Join(dir, fmt.Sprintf("ttySOAK%d", i)))
		must(t, err)
		r.ptys = append(r.ptys, p)
		t.Cleanup(p.close)
	}

	r.mllp = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := strings.NewReplacer("{{DIR}}", dir, "{{MLLP}}", r.mllp, "{{UPSTREAM}}", r.up.addr, "{{BROKER}}", r.broker.addr).Replace(soakConfig)
	must(t, os.WriteFile(r.cfg, []byte(cfg), 0o600))
	if out, err := exec.Command(binPath, "config", "check", r.cfg).CombinedOutput(); err != nil {
		t.Fatalf("config check refused the soak's configuration: %v\n%s", err, out)
	}
	return r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// soakMildFaults run all the time: the upstream fails now and then.
var soakMildFaults = refserver.Faults{Status500Every: 97, ExceptionEvery: 113, WrongAckEvery: 89}

// soakHardFaults are a bad ten seconds.
var soakHardFaults = refserver.Faults{Status500Every: 3, ExceptionEvery: 5, WrongAckEvery: 4, Delay: 100 * time.Millisecond}

func (r *soakRun) startLife() {
	// The process may announce itself on MQTT before its MLLP port opens.
	launched := time.Now()
	d := startDaemon(r.t, r.cfg, r.socket, r.mllp)
	r.cur = soakLife{d: d, started: launched}
	r.pid.Store(int64(d.cmd.Process.Pid))
}

// endLife checks what the process wrote to stderr: no patient data.
func (r *soakRun) endLife() {
	text := r.cur.d.logText()
	for _, line := range strings.Split(text, "\n") {
		r.logLines++
		if strings.Contains(line, "level=ERROR") {
			r.logErrors++
		}
	}
	if i := strings.Index(text, soakPHI); i >= 0 {
		r.t.Errorf("the daemon's log holds message content (the marker %s in PID-5): %q", soakPHI, excerpt(text, i))
	}
}

func excerpt(s string, i int) string {
	return s[max(0, i-120):min(len(s), i+40)]
}

// kill ends the current process abruptly and starts the next.
func (r *soakRun) kill() {
	session, online := r.obs.onlineSince(r.cur.started)
	r.pid.Store(0)
	pid := r.cur.d.cmd.Process.Pid
	sig := "SIGKILL"
	if r.kills%3 == 1 {
		sig = "SIGQUIT"
		// The Go runtime's crash path: no deferred code runs, and the dump
		// on stderr lists every goroutine.
		_ = r.cur.d.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-r.cur.d.exited:
		case <-time.After(15 * time.Second):
			r.cur.d.kill()
		}
		r.quits++
		r.goroutines = append(r.goroutines, countGoroutines(r.cur.d.logText()))
	} else {
		r.cur.d.kill()
	}
	r.kills++
	if online {
		r.wills = append(r.wills, soakWill{session: session, killed: time.Now()})
	}
	r.endLife()
	r.startLife()
	r.chaos.logf("%s pid %d (kill %d; MQTT session %d online: %v); restarted as pid %d", sig, pid, r.kills, session, online, r.cur.d.cmd.Process.Pid)
}

func countGoroutines(log string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, "goroutine ") && !strings.HasPrefix(line, "goroutine 0 ") {
			n++
		}
	}
	return n
}

func (r *soakRun) since() string { return time.Since(r.start).Round(time.Second).String() }

// sample watches the daemon's resources every 2 s until ctx ends.
func (r *soakRun) sample(ctx context.Context) {
	spoolDir := filepath.Join(r.dir, "spool")
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pid := int(r.pid.Load())
		if pid == 0 {
			continue
		}
		s := soakSample{at: time.Since(r.start), pid: pid, spoolBytes: -1, ae: r.ledger.aeCount()}
		var err error
		if s.rss, s.threads, err = procStatus(pid); err != nil {
			continue // between a kill and a restart
		}
		if s.fds, err = countFDs(pid); err != nil {
			continue
		}
		s.spoolDisk = diskUsage(spoolDir)
		if b, q, ok := spoolBytes(r.socket); ok {
			s.spoolBytes, s.queued = b, q
		}
		if int(r.pid.Load()) != pid {
			continue // killed while we looked
		}
		r.sampleMu.Lock()
		r.samples = append(r.samples, s)
		r.sampleMu.Unlock()
	}
}

func (r *soakRun) run(faultPhase time.Duration) {
	t := r.t
	r.start = time.Now()
	r.startLife()

	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	var sampler sync.WaitGroup
	sampler.Go(func() { r.sample(bg) })

	// Senders: four MLLP connections, a serial device (MLLP framing), a
	// LIS01-A2 analyser, and two quota fillers that wait for the fault.
	sendCtx, stopSenders := context.WithCancel(context.Background())
	defer stopSenders()
	var senders sync.WaitGroup
	add := func(name string, ex soakExchanger, pace time.Duration, canAR, fill bool) {
		s := &soakSender{name: name, ex: ex, ledger: r.ledger, pace: pace, canAR: canAR, fill: fill,
			on: &r.fillOn, stop: &r.stopSend, rng: rand.New(rand.NewPCG(r.seed, uint64(len(r.senders)+1)))}
		r.senders = append(r.senders, s)
		senders.Go(func() { s.run(sendCtx) })
	}
	for i := 1; i <= 4; i++ {
		add(fmt.Sprintf("m%d", i), &mllpExchanger{addr: r.mllp, ledger: r.ledger}, 250*time.Millisecond, true, false)
	}
	add("s1", newSerialMLLPExchanger(r.ptys[0], r.ledger), 300*time.Millisecond, true, false)
	add("l1", newLISExchanger(r.ptys[1]), 400*time.Millisecond, false, false)
	for i := 1; i <= 2; i++ {
		add(fmt.Sprintf("f%d", i), &mllpExchanger{addr: r.mllp, ledger: r.ledger}, 0, false, true)
	}

	// The fault driver for everything but kills, which this goroutine does
	// itself because starting a daemon may fail the test.
	r.chaos = &soakChaos{rng: rand.New(rand.NewPCG(r.seed, 0)), run: r, start: r.start}
	chaosCtx, stopChaos := context.WithCancel(context.Background())
	defer stopChaos()
	var chaos sync.WaitGroup
	chaos.Go(func() { r.chaos.loop(chaosCtx) })

	killRNG := rand.New(rand.NewPCG(r.seed, 99))
	nextKill := time.Now().Add(time.Duration(15+killRNG.IntN(16)) * time.Second)
	for {
		if time.Since(r.start) >= faultPhase && r.kills >= 2 && r.chaos.coveredAll() {
			break
		}
		if time.Since(r.start) >= faultPhase+5*time.Minute {
			t.Errorf("the fault cycle did not complete within 5 minutes after the %s fault phase", faultPhase)
			break
		}
		select {
		case <-r.cur.d.exited:
			t.Fatalf("the gateway exited on its own (code %d):\n%s", r.cur.d.cmd.ProcessState.ExitCode(), r.cur.d.tail(60))
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(nextKill) {
			r.kill()
			nextKill = time.Now().Add(time.Duration(15+killRNG.IntN(16)) * time.Second)
		}
	}
	faultEnd := time.Since(r.start)

	// Quiet: faults off, everything back up; one last quota fill that no
	// kill can rescue; then senders settle.
	stopChaos()
	chaos.Wait()
	r.probeTime, r.probeStuck = r.quotaProbe()
	t.Logf("%6s  faults stopped; senders finish the message in hand", r.since())
	r.stopSend.Store(true)
	settled := make(chan struct{})
	go func() { senders.Wait(); close(settled) }()
	select {
	case <-settled:
	case <-time.After(2 * time.Minute):
		for _, s := range r.senders {
			if s.busy.Load() {
				t.Errorf("sender %s still had an unanswered or refused message 2 minutes after the faults stopped", s.name)
			}
		}
		stopSenders()
		<-settled
	}

	// Drain.
	deadline := time.Now().Add(3 * time.Minute)
	var st appliance.SpoolReport
	for {
		select {
		case <-r.cur.d.exited:
			t.Fatalf("the gateway exited on its own while draining:\n%s", r.cur.d.tail(60))
		default:
		}
		st = r.cur.d.stats()
		if st.Destinations["ehr"].Queued == 0 && st.Destinations["archive"].Queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the spool did not drain within 3 minutes of the faults stopping: %+v", st.Destinations)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for name, q := range st.Destinations {
		if q.Dead != 0 {
			t.Errorf("destination %s has %d dead letters; with max_attempts 0 nothing may die", name, q.Dead)
		}
	}
	t.Logf("%6s  drained", r.since())

	// MQTT: the running box is online, retained, in its own session.
	brokerURL := "tcp://" + r.broker.addr
	online, err := retainedStatus(brokerURL, soakDevice, 45*time.Second, func(s soakStatus) bool { return s.state == "online" })
	if err != nil {
		t.Errorf("MQTT: %v", err)
	}
	liveSession, _ := r.obs.onlineSince(r.cur.started)
	if err == nil && liveSession != 0 && online.session != liveSession {
		t.Errorf("MQTT: the retained status is online with session %d, but the running process announced session %d", online.session, liveSession)
	}

	// Clean stop: SIGTERM, exit 0, and the offline status of this session.
	r.pid.Store(0)
	r.cur.d.stop()
	r.endLife()
	stopBG()
	sampler.Wait()
	if err == nil {
		if _, err := retainedStatus(brokerURL, soakDevice, 15*time.Second, func(s soakStatus) bool {
			return s.state == "offline" && s.session == online.session
		}); err != nil {
			t.Errorf("MQTT after SIGTERM: %v", err)
		}
	}
	r.checkMQTT()

	// The spool as the CLI sees it with the daemon stopped.
	out, err := exec.Command(binPath, "spool", "stats", "--config", r.cfg, "--json").Output()
	var end appliance.SpoolReport
	if err != nil || json.Unmarshal(out, &end) != nil {
		t.Errorf("spool stats after the stop: %v\n%s", err, out)
	}
	endDisk := diskUsage(filepath.Join(r.dir, "spool"))

	// The ledger against what arrived.
	delivered, err := readSoakDelivered(filepath.Join(r.dir, "archive"), filepath.Join(r.dir, "store"))
	if err != nil {
		t.Fatalf("reading deliveries: %v", err)
	}
	v := verifySoak(r.ledger, delivered)
	for i, p := range v.problems {
		if i == 40 {
			t.Errorf("... and %d more problems", len(v.problems)-i)
			break
		}
		t.Errorf("ledger: %s", p)
	}
	if path := os.Getenv("SOAK_SAMPLES"); path != "" {
		r.writeSamples(path)
	}
	ceil := checkSoakCeilings(r.samples, soakCeilings)
	for _, p := range ceil {
		t.Errorf("resources: %s", p)
	}
	r.summary(faultEnd, v, end, endDisk)
	if v.lost != 0 {
		t.Errorf("%d acknowledged deliveries were lost", v.lost)
	}
	r.checkCoverage(v)
	if r.probeStuck {
		t.Error("the spool kept refusing with every queue empty: a full, fully delivered segment was never freed")
	}
}

// writeSamples saves the resource samples as CSV, for a plot.
func (r *soakRun) writeSamples(path string) {
	var b strings.Builder
	b.WriteString("seconds,pid,rss_bytes,threads,fds,spool_disk_bytes,spool_bytes,queued,ae_answers\n")
	for _, s := range r.samples {
		fmt.Fprintf(&b, "%.1f,%d,%d,%d,%d,%d,%d,%d,%d\n", s.at.Seconds(), s.pid, s.rss, s.threads, s.fds, s.spoolDisk, s.spoolBytes, s.queued, s.ae)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		r.t.Errorf("SOAK_SAMPLES: %v", err)
	}
}

// quotaProbe is the quota fault once more with no kills to mask the
// outcome: wait for a spool with room, fill it, bring the upstream back,
// let every queue drain, and expect room for a large message again. It
// returns how long that took after the upstream returned, or that the
// spool stayed full with every queue empty (then it restarts the daemon,
// which frees it, so that the soak can finish).
func (r *soakRun) quotaProbe() (recovered time.Duration, stuck bool) {
	t := r.t
	r.chaos.logf("probe: waiting for room in the spool (no more kills)")
	if _, stuck := r.waitRoom(time.Now()); stuck {
		return 0, true
	}
	r.chaos.logf("probe: upstream down, fillers on")
	r.up.stop()
	ae := r.ledger.aeCount()
	r.fillOn.Store(true)
	deadline := time.Now().Add(90 * time.Second)
	for r.ledger.aeCount() == ae && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	full := r.ledger.aeCount() > ae
	r.fillOn.Store(false)
	must(t, r.up.start())
	if !full {
		t.Errorf("quota probe: no sender was refused within 90s of filling a %s spool with the upstream down", mib(soakMaxBytes))
		return 0, false
	}
	r.chaos.logf("probe: spool full, fillers off, upstream up")
	return r.waitRoom(time.Now())
}

// waitRoom waits until the spool has room for a quota filler's message.
// When every queue has been empty for 20 s and there is still no room,
// the spool is stuck: the daemon is restarted to free it.
func (r *soakRun) waitRoom(since time.Time) (time.Duration, bool) {
	t := r.t
	room := func(st appliance.SpoolReport) bool { return st.Bytes+soakFillBytes+128 <= st.MaxBytes }
	var emptySince time.Time
	for {
		st := r.cur.d.stats()
		if room(st) {
			took := time.Since(since)
			r.chaos.logf("probe: room for a 96KiB message after %s (spool counts %s)", took.Round(100*time.Millisecond), mib(st.Bytes))
			return took, false
		}
		drained := st.Destinations["ehr"].Queued == 0 && st.Destinations["archive"].Queued == 0
		switch {
		case !drained:
			emptySince = time.Time{}
		case emptySince.IsZero():
			emptySince = time.Now()
		case time.Since(emptySince) > 20*time.Second:
			// Everything is delivered, and still no room.
			r.chaos.logf("probe: STUCK: every queue empty for 20s, yet the spool counts %s of %s and refuses; restarting the daemon",
				mib(st.Bytes), mib(st.MaxBytes))
			r.pid.Store(0)
			r.cur.d.stop()
			r.endLife()
			r.startLife()
			for again := time.Now(); time.Since(again) < 30*time.Second; time.Sleep(500 * time.Millisecond) {
				if st = r.cur.d.stats(); room(st) {
					break
				}
			}
			r.chaos.logf("probe: after the restart the spool counts %s", mib(st.Bytes))
			if !room(st) {
				t.Errorf("quota probe: even after a restart the spool counts %s of %s with every queue empty", mib(st.Bytes), mib(st.MaxBytes))
			}
			return 0, true
		}
		if time.Since(since) > 5*time.Minute {
			t.Errorf("quota probe: no room in the spool within 5 minutes (queues %+v)", st.Destinations)
			return 0, false
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// checkMQTT checks what the observer saw over the whole soak.
func (r *soakRun) checkMQTT() {
	t := r.t
	status, _, _, leaks := r.obs.snapshot()
	if len(leaks) > 0 {
		t.Errorf("MQTT: %d payloads held message content (the %s marker), on %v", len(leaks), soakPHI, leaks[:min(5, len(leaks))])
	}
	// Sessions only go up: a restarted box never reuses an old one.
	var last uint64
	for _, s := range status {
		if s.state == "online" {
			if s.session < last {
				t.Errorf("MQTT: online with session %d after session %d", s.session, last)
			}
			last = max(last, s.session)
		}
	}
	// Every process killed while online left its Last Will, unless the
	// broker itself went down right after the kill.
	stops := r.chaos.brokerStopTimes()
	expected, seen := 0, 0
	for _, w := range r.wills {
		void := false
		for _, at := range stops {
			if !at.Before(w.killed.Add(-time.Second)) && at.Before(w.killed.Add(5*time.Second)) {
				void = true
			}
		}
		if void {
			continue
		}
		expected++
		found := false
		for _, s := range status {
			if s.state == "offline" && s.session == w.session && !s.at.Before(w.killed.Add(-time.Second)) {
				found = true
				break
			}
		}
		if found {
			seen++
		} else {
			t.Errorf("MQTT: session %d was online when its process was killed at %s, but no offline status (Last Will) for it arrived",
				w.session, w.killed.Sub(r.start).Round(time.Second))
		}
	}
	r.chaos.note("wills", fmt.Sprintf("%d of %d", seen, expected))
	if expected == 0 && r.kills > 0 {
		t.Logf("MQTT: no kill happened while the box was online at a stable broker; the Last Will was not exercised")
	}
}

// checkCoverage fails a soak that did not exercise what it claims to.
func (r *soakRun) checkCoverage(v soakVerdict) {
	t := r.t
	c := r.chaos
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.kills < 2 || c.outages < 1 || c.quotaFills < 1 || c.brokerRestarts < 1 || c.webBursts < 1 {
		t.Errorf("the soak did not exercise every fault: kills %d, upstream outages %d, quota fills %d, broker restarts %d, web-fault bursts %d",
			r.kills, c.outages, c.quotaFills, c.brokerRestarts, c.webBursts)
	}
	if v.ackedByKind[kindEHR] == 0 || v.ackedByKind[kindArchive] == 0 || v.ackedByKind[kindTest] == 0 || v.ackedByKind[kindFill] == 0 || v.refusedAR == 0 || v.aeThenAA == 0 {
		t.Errorf("the soak did not exercise every kind of message: AA'd by kind %v, AR %d, AE then AA %d", v.ackedByKind, v.refusedAR, v.aeThenAA)
	}
}

// summary prints the figures, to the test log and to stdout.
func (r *soakRun) summary(faultEnd time.Duration, v soakVerdict, end appliance.SpoolReport, endDisk int64) {
	c := r.chaos
	c.mu.Lock()
	defer c.mu.Unlock()
	status, topics, alarms, _ := r.obs.snapshot()
	var peak soakSample
	for _, s := range r.samples {
		peak.rss = max(peak.rss, s.rss)
		peak.fds = max(peak.fds, s.fds)
		peak.threads = max(peak.threads, s.threads)
		peak.spoolBytes = max(peak.spoolBytes, s.spoolBytes)
		peak.spoolDisk = max(peak.spoolDisk, s.spoolDisk)
	}
	maxG := 0
	for _, g := range r.goroutines {
		maxG = max(maxG, g)
	}
	r.ledger.mu.Lock()
	sent, distinct := r.ledger.sent, len(r.ledger.msgs)
	r.ledger.mu.Unlock()
	var perStream []string
	for _, s := range r.senders {
		r.ledger.mu.Lock()
		perStream = append(perStream, fmt.Sprintf("%s %d", s.name, len(r.ledger.acked[s.name])))
		r.ledger.mu.Unlock()
	}
	offline := 0
	for _, s := range status {
		if s.state == "offline" {
			offline++
		}
	}
	var topicList []string
	for k, n := range topics {
		topicList = append(topicList, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(topicList)
	var alarmList []string
	for k, n := range alarms {
		alarmList = append(alarmList, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(alarmList)
	var statusList []string
	if len(status) > 8 {
		statusList = append(statusList, fmt.Sprintf("%d in all; the last:", len(status)))
		status = status[len(status)-8:]
	}
	for _, s := range status {
		statusList = append(statusList, fmt.Sprintf("%s %s/%d", s.at.Sub(r.start).Round(100*time.Millisecond), s.state, s.session))
	}
	probe := fmt.Sprintf("room for a 96KiB message %s after the upstream returned", r.probeTime.Round(100*time.Millisecond))
	if r.probeStuck {
		probe = "STUCK: refused with every message delivered, until a restart"
	}
	rows := [][2]string{
		{"fault phase / total", fmt.Sprintf("%s / %s (seed %d)", faultEnd.Round(time.Second), time.Since(r.start).Round(time.Second), r.seed)},
		{"sent (attempts / control IDs)", fmt.Sprintf("%d / %d", sent, distinct)},
		{"acked AA", fmt.Sprintf("%d (ehr+archive %d, archive-only %d, test->bin %d, quota fill %d)", v.acked, v.ackedByKind[kindEHR], v.ackedByKind[kindArchive], v.ackedByKind[kindTest], v.ackedByKind[kindFill])},
		{"acked per stream", strings.Join(perStream, ", ")},
		{"refused AE (IDs / answers)", fmt.Sprintf("%d / %d, of which later AA %d", v.refusedAE, r.ledger.aeCount(), v.aeThenAA)},
		{"refused AR (malformed)", strconv.Itoa(v.refusedAR)},
		{"outcome unknown (kill mid-exchange)", fmt.Sprintf("%d, of which delivered anyway %d", v.unknown, v.unknownDelivered)},
		{"delivered ehr (IDs / posts)", fmt.Sprintf("%d / %d", v.deliveredEHR, v.ehrPosts)},
		{"delivered archive (IDs)", strconv.Itoa(v.deliveredArchive)},
		{"duplicates at ehr (same GUID)", strconv.Itoa(v.ehrDuplicates)},
		{"restarts (SIGKILL / SIGQUIT)", fmt.Sprintf("%d (%d / %d)", r.kills, r.kills-r.quits, r.quits)},
		{"upstream outages", strconv.Itoa(c.outages)},
		{"quota fills (reached AE / tried)", fmt.Sprintf("%d / %d", c.quotaFills, c.quotaTries)},
		{"quota probe without kills", probe},
		{"broker restarts", strconv.Itoa(c.brokerRestarts)},
		{"web-fault bursts", strconv.Itoa(c.webBursts)},
		{"MQTT wills seen / expected", c.notes["wills"]},
		{"MQTT messages", fmt.Sprintf("%s; offline statuses %d", strings.Join(topicList, ", "), offline)},
		{"MQTT alarms by kind", strings.Join(alarmList, ", ")},
		{"MQTT statuses (time state/session)", strings.Join(statusList, ", ")},
		{"peak RSS", mib(peak.rss)},
		{"peak open files", strconv.FormatInt(peak.fds, 10)},
		{"peak threads", strconv.FormatInt(peak.threads, 10)},
		{"goroutines at SIGQUIT (max)", fmt.Sprintf("%d %v", maxG, r.goroutines)},
		{"peak spool (count / disk)", fmt.Sprintf("%s / %s of max_bytes %s", mib(peak.spoolBytes), mib(peak.spoolDisk), mib(soakMaxBytes))},
		{"end spool (count / disk)", fmt.Sprintf("%s, %d messages / %s", mib(end.Bytes), end.Messages, mib(endDisk))},
		{"resource samples", strconv.Itoa(len(r.samples))},
		{"daemon log lines (ERROR)", fmt.Sprintf("%d (%d)", r.logLines, r.logErrors)},
		{"problems", strconv.Itoa(len(v.problems))},
		{"LOST", strconv.Itoa(v.lost)},
	}
	var b strings.Builder
	b.WriteString("\n=== hl7edge soak summary ===\n")
	for _, row := range rows {
		fmt.Fprintf(&b, "  %-38s %s\n", row[0], row[1])
	}
	fmt.Fprintf(&b, "fault log:\n  %s\n", strings.Join(c.events, "\n  "))
	r.t.Log(b.String())
	fmt.Print(b.String())
}

// soakChaos injects every fault but kills, in a shuffled cycle.
type soakChaos struct {
	rng   *rand.Rand
	run   *soakRun
	start time.Time

	mu             sync.Mutex
	events         []string
	outages        int
	quotaFills     int
	quotaTries     int
	brokerRestarts int
	webBursts      int
	brokerStops    []time.Time
	notes          map[string]string
}

func (c *soakChaos) logf(format string, a ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, fmt.Sprintf("%6s  ", time.Since(c.start).Round(time.Second))+fmt.Sprintf(format, a...))
}

func (c *soakChaos) note(k, v string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.notes == nil {
		c.notes = map[string]string{}
	}
	c.notes[k] = v
}

func (c *soakChaos) coveredAll() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.outages > 0 && c.quotaTries > 0 && c.brokerRestarts > 0 && c.webBursts > 0
}

func (c *soakChaos) brokerStopTimes() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.brokerStops...)
}

func (c *soakChaos) between(lo, hi int) time.Duration {
	return time.Duration(lo*1000+c.rng.IntN((hi-lo)*1000+1)) * time.Millisecond
}

// loop runs faults until ctx ends, then puts everything back.
func (c *soakChaos) loop(ctx context.Context) {
	r := c.run
	defer func() {
		r.fillOn.Store(false)
		r.ref.SetFaults(refserver.Faults{})
		if err := r.up.start(); err != nil {
			r.t.Errorf("chaos: %v", err)
		}
		if err := r.broker.start(); err != nil {
			r.t.Errorf("chaos: %v", err)
		}
		c.logf("faults off: upstream and broker up, web service without faults")
	}()
	for ctx.Err() == nil {
		for _, k := range c.rng.Perm(4) {
			sleepCtx(ctx, c.between(3, 10))
			if ctx.Err() != nil {
				return
			}
			switch k {
			case 0:
				c.outage(ctx)
			case 1:
				c.quota(ctx)
			case 2:
				c.restartBroker(ctx)
			case 3:
				c.webBurst(ctx)
			}
		}
	}
}

func (c *soakChaos) outage(ctx context.Context) {
	d := c.between(8, 12)
	c.logf("upstream down for %s", d.Round(100*time.Millisecond))
	c.run.up.stop()
	c.mu.Lock()
	c.outages++
	c.mu.Unlock()
	sleepCtx(ctx, d)
	if err := c.run.up.start(); err != nil {
		c.run.t.Errorf("chaos: %v", err)
	}
	c.logf("upstream up")
}

// quota fills the spool: with the upstream down, the ehr queue keeps every
// message, and the fillers send 96 KiB messages until someone is answered
// AE. The spool stays full for 3 s (every sender meets AE), then the
// upstream comes back and drains it.
func (c *soakChaos) quota(ctx context.Context) {
	r := c.run
	c.logf("quota: upstream down, fillers on")
	r.up.stop()
	c.mu.Lock()
	c.quotaTries++
	c.mu.Unlock()
	ae := r.ledger.aeCount()
	r.fillOn.Store(true)
	deadline := time.Now().Add(60 * time.Second)
	for ctx.Err() == nil && r.ledger.aeCount() == ae && time.Now().Before(deadline) {
		sleepCtx(ctx, 100*time.Millisecond)
	}
	if r.ledger.aeCount() > ae {
		b, _, _ := spoolBytes(r.socket)
		c.mu.Lock()
		c.quotaFills++
		c.mu.Unlock()
		c.logf("quota: spool full (%s counted), senders answered AE", mib(b))
		sleepCtx(ctx, 3*time.Second)
	} else {
		c.logf("quota: no AE within 60s")
	}
	r.fillOn.Store(false)
	if err := r.up.start(); err != nil {
		r.t.Errorf("chaos: %v", err)
	}
	c.logf("quota: fillers off, upstream up")
	// How long until a filler's message fits again (kills may intervene,
	// and a restart frees a stuck spool: the probe at the end has none).
	back := time.Now()
	for ctx.Err() == nil && time.Since(back) < time.Minute {
		if b, _, ok := spoolBytes(r.socket); ok && b+soakFillBytes+128 <= soakMaxBytes {
			c.logf("quota: room for a 96KiB message %s after the upstream returned", time.Since(back).Round(100*time.Millisecond))
			return
		}
		sleepCtx(ctx, 500*time.Millisecond)
	}
	c.logf("quota: no room for a 96KiB message within %s of the upstream's return", time.Since(back).Round(time.Second))
}

func (c *soakChaos) restartBroker(ctx context.Context) {
	d := c.between(3, 8)
	c.logf("broker down for %s", d.Round(100*time.Millisecond))
	c.run.broker.stop()
	c.run.obs.brokerRestarted()
	c.mu.Lock()
	c.brokerRestarts++
	c.brokerStops = append(c.brokerStops, time.Now())
	c.mu.Unlock()
	sleepCtx(ctx, d)
	if err := c.run.broker.start(); err != nil {
		c.run.t.Errorf("chaos: %v", err)
	}
	c.logf("broker up")
}

func (c *soakChaos) webBurst(ctx context.Context) {
	c.logf("web service: hard faults for 10s")
	c.run.ref.SetFaults(soakHardFaults)
	c.mu.Lock()
	c.webBursts++
	c.mu.Unlock()
	sleepCtx(ctx, 10*time.Second)
	c.run.ref.SetFaults(soakMildFaults)
	c.logf("web service: mild faults")
}
