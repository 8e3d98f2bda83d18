package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	paho "github.com/eclipse/paho.mqtt.golang"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"golang.org/x/sys/unix"

	"github.com/hl7edge/hl7edge/device/admin"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

// The soak's peers, all in the test process and all on loopback: the
// reference web service over HTTPS that can go down and come back on the
// same port, an MQTT broker that can be restarted on the same port, an
// MQTT observer, pseudo-terminals for the serial sources, and a sampler of
// the daemon's resources.

// listenRetry listens on a fixed address, retrying while the port is still
// held by the listener just closed.
func listenRetry(addr string, listen func(string) (net.Listener, error)) (net.Listener, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := listen(addr)
		if err == nil || time.Now().After(deadline) {
			return l, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// soakUpstream is refserver behind a TLS listener that stop and start
// take down and bring back on the same port.
type soakUpstream struct {
	ref  *refserver.Server
	addr string
	tls  *tls.Config

	mu      sync.Mutex
	hs      *http.Server
	outages int
}

// addr is a port from build/freeport: one from port 0 is free for any
// outgoing connection while the upstream is down, and one that took it
// and ended holds it in TIME_WAIT for a minute, past listenRetry's wait.
func newSoakUpstream(ref *refserver.Server, cert tls.Certificate, addr string) (*soakUpstream, error) {
	u := &soakUpstream{ref: ref, tls: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}}
	l, err := tls.Listen("tcp", addr, u.tls)
	if err != nil {
		return nil, err
	}
	u.addr = l.Addr().String()
	u.serve(l)
	return u, nil
}

func (u *soakUpstream) serve(l net.Listener) {
	hs := &http.Server{Handler: u.ref, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	u.hs = hs
	go func() { _ = hs.Serve(l) }()
}

// stop closes the listener and every open connection: the upstream is gone.
func (u *soakUpstream) stop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.hs == nil {
		return
	}
	_ = u.hs.Close()
	u.hs = nil
	u.outages++
}

// start brings the upstream back on the same port.
func (u *soakUpstream) start() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.hs != nil {
		return nil
	}
	l, err := listenRetry(u.addr, func(a string) (net.Listener, error) { return tls.Listen("tcp", a, u.tls) })
	if err != nil {
		return fmt.Errorf("upstream back on %s: %w", u.addr, err)
	}
	u.serve(l)
	return nil
}

// soakBroker is an in-process mochi broker on a fixed port.
type soakBroker struct {
	addr     string
	mu       sync.Mutex
	srv      *mochi.Server
	restarts int
}

func (b *soakBroker) start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv != nil {
		return nil
	}
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.DiscardHandler), InlineClient: false})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return err
	}
	// mochi binds in AddListener; retry while the old socket lets go.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "soak", Address: b.addr}))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("broker on %s: %w", b.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := srv.Serve(); err != nil {
		return err
	}
	b.srv = srv
	return nil
}

func (b *soakBroker) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil {
		return
	}
	_ = b.srv.Close()
	b.srv = nil
	b.restarts++
}

// soakStatus is one message on the status topic.
type soakStatus struct {
	at       time.Time
	epoch    int // broker restarts before it arrived
	state    string
	session  uint64
	retained bool
}

// soakObserver is a separate MQTT client that watches the box's topics.
type soakObserver struct {
	c      paho.Client
	marker []byte

	mu       sync.Mutex
	epoch    int
	status   []soakStatus
	payloads map[string]int // messages per topic suffix
	alarms   map[string]int // alarm events per kind
	leaks    []string       // topics whose payload held the marker
}

func newSoakObserver(brokerURL, device string, marker []byte) *soakObserver {
	o := &soakObserver{marker: marker, payloads: map[string]int{}, alarms: map[string]int{}}
	filter := "hl7edge/" + device + "/#"
	opts := paho.NewClientOptions().AddBroker(brokerURL).
		SetClientID(fmt.Sprintf("soak-observer-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetStore(paho.NewMemoryStore()).SetOrderMatters(true).
		SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(300 * time.Millisecond).SetMaxReconnectInterval(time.Second).
		SetConnectTimeout(3 * time.Second)
	opts.SetOnConnectHandler(func(c paho.Client) {
		c.Subscribe(filter, 1, o.onMessage)
	})
	o.c = paho.NewClient(opts)
	o.c.Connect()
	return o
}

func (o *soakObserver) onMessage(_ paho.Client, m paho.Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	parts := strings.Split(m.Topic(), "/")
	kind := strings.Join(parts[min(2, len(parts)):], "/")
	o.payloads[kind]++
	if bytes.Contains(m.Payload(), o.marker) || strings.Contains(m.Topic(), string(o.marker)) {
		o.leaks = append(o.leaks, m.Topic())
	}
	if kind == "alarm" {
		var a struct {
			Kind string `json:"kind"`
		}
		_ = json.Unmarshal(m.Payload(), &a)
		o.alarms[a.Kind]++
	}
	if kind != "status" {
		return
	}
	var s struct {
		State   string `json:"state"`
		Session uint64 `json:"session"`
	}
	_ = json.Unmarshal(m.Payload(), &s)
	o.status = append(o.status, soakStatus{at: time.Now(), epoch: o.epoch, state: s.State, session: s.Session, retained: m.Retained()})
}

// brokerRestarted starts a new epoch: statuses seen before it say nothing
// about the connection to the new broker.
func (o *soakObserver) brokerRestarted() {
	o.mu.Lock()
	o.epoch++
	o.mu.Unlock()
}

// onlineSince returns the session of the last status, when it is online,
// arrived in the current broker epoch and after since.
func (o *soakObserver) onlineSince(since time.Time) (uint64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if n := len(o.status); n > 0 {
		s := o.status[n-1]
		if s.state == "online" && s.epoch == o.epoch && s.at.After(since) {
			return s.session, true
		}
	}
	return 0, false
}

func (o *soakObserver) snapshot() (status []soakStatus, topics, alarms map[string]int, leaks []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]soakStatus(nil), o.status...), maps.Clone(o.payloads), maps.Clone(o.alarms), append([]string(nil), o.leaks...)
}

func (o *soakObserver) close() { o.c.Disconnect(100) }

// retainedStatus connects a fresh client and returns the retained status
// the broker hands it, waiting up to wait for one that satisfies ok.
func retainedStatus(brokerURL, device string, wait time.Duration, ok func(soakStatus) bool) (soakStatus, error) {
	deadline := time.Now().Add(wait)
	var last soakStatus
	for {
		got := make(chan soakStatus, 4)
		opts := paho.NewClientOptions().AddBroker(brokerURL).
			SetClientID(fmt.Sprintf("soak-retained-%d", time.Now().UnixNano())).
			SetCleanSession(true).SetStore(paho.NewMemoryStore()).SetConnectTimeout(3 * time.Second)
		c := paho.NewClient(opts)
		if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			c.Subscribe("hl7edge/"+device+"/status", 1, func(_ paho.Client, m paho.Message) {
				var s struct {
					State   string `json:"state"`
					Session uint64 `json:"session"`
				}
				_ = json.Unmarshal(m.Payload(), &s)
				select {
				case got <- soakStatus{at: time.Now(), state: s.State, session: s.Session, retained: m.Retained()}:
				default:
				}
			})
			select {
			case s := <-got:
				last = s
			case <-time.After(2 * time.Second):
			}
			c.Disconnect(100)
			if last.retained && ok(last) {
				return last, nil
			}
		}
		if time.Now().After(deadline) {
			return last, fmt.Errorf("no retained status as wanted on hl7edge/%s/status within %s (last seen: %+v)", device, wait, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// soakPTY is a kernel pseudo-terminal standing in for a serial device.
// The daemon opens the slave through link; the test plays the device on
// the master, and holds the slave too so the pty outlives every daemon.
type soakPTY struct {
	m, s *os.File
	link string
}

func newSoakPTY(link string) (*soakPTY, error) {
	m, s, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("opening a pty: %w", err)
	}
	// Raw mode now, so that what the device writes before the daemon opens
	// the port (and sets the same) is neither echoed nor altered.
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		return nil, err
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB | unix.CBAUD
	tio.Cflag |= unix.CS8 | unix.B115200
	tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio); err != nil {
		return nil, err
	}
	// A non-blocking duplicate of the master goes through the poller, so
	// read deadlines work and Close interrupts a read.
	fd, err := unix.Dup(int(m.Fd()))
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, err
	}
	m.Close()
	_ = os.Remove(link)
	if err := os.Symlink(s.Name(), link); err != nil {
		return nil, err
	}
	return &soakPTY{m: os.NewFile(uintptr(fd), "ptmx"), s: s, link: link}, nil
}

func (p *soakPTY) close() {
	p.m.Close()
	p.s.Close()
}

// soakSample is one look at the running daemon.
type soakSample struct {
	at         time.Duration // since the soak began
	pid        int
	rss        int64 // VmRSS bytes
	threads    int64 // OS threads (Go does not expose goroutines outside the process)
	fds        int64
	spoolDisk  int64 // allocated bytes under spool.dir
	spoolBytes int64 // the spool's own count against max_bytes
	queued     int64 // ehr + archive queues
	ae         int   // AE answers so far (all senders)
}

// procStatus reads VmRSS (bytes) and Threads from /proc/<pid>/status.
func procStatus(pid int) (rss, threads int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			rss = kb << 10
		case "Threads:":
			threads, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	return rss, threads, nil
}

func countFDs(pid int) (int64, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return int64(len(ents)), err
}

// diskUsage is what du reports: allocated blocks, so Badger's sparse
// value-log files count for what they really take.
func diskUsage(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// spoolBytes asks the daemon for its spool figure and queue depth; it
// never fails the test (the daemon may be between a kill and a restart).
func spoolBytes(socket string) (bytes, queued int64, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r, err := admin.Call(ctx, socket, command.Request{ID: "soak", Name: command.SpoolStats})
	if err != nil || r.Status != command.Successful {
		return 0, 0, false
	}
	b, _ := json.Marshal(r.Data)
	var st struct {
		Bytes        int64 `json:"bytes"`
		Destinations map[string]struct {
			Queued int64 `json:"queued"`
		} `json:"destinations"`
	}
	if json.Unmarshal(b, &st) != nil {
		return 0, 0, false
	}
	for _, d := range st.Destinations {
		queued += d.Queued
	}
	return st.Bytes, queued, true
}

// soakLimits are the resource ceilings. Hard limits hold at every sample;
// growth limits compare the later half of the soak with the earlier half
// (after warm-up): later max <= earlier max * factor + slack.
type soakLimits struct {
	warmUp                          time.Duration
	maxRSS, maxFDs, maxThreads      int64
	maxSpoolBytes, maxSpoolDisk     int64
	growth                          float64
	slackRSS, slackFDs, slackThread int64
	// Disk use is compared only at samples where the spool is nearly empty
	// (below lowSpool bytes): a full spool legitimately takes room, an
	// empty one must not take more and more.
	lowSpool, slackDisk int64
	// Growth between the halves is judged only over runs at least this long.
	minGrowthSpan time.Duration
}

// checkSoakCeilings applies the limits to the samples.
func checkSoakCeilings(samples []soakSample, lim soakLimits) []string {
	var out []string
	var kept []soakSample
	for _, s := range samples {
		if s.rss > lim.maxRSS {
			out = append(out, fmt.Sprintf("RSS %s at %s is over the %s ceiling", mib(s.rss), s.at.Round(time.Second), mib(lim.maxRSS)))
		}
		if s.fds > lim.maxFDs {
			out = append(out, fmt.Sprintf("%d open files at %s, over the ceiling of %d", s.fds, s.at.Round(time.Second), lim.maxFDs))
		}
		if s.threads > lim.maxThreads {
			out = append(out, fmt.Sprintf("%d threads at %s, over the ceiling of %d", s.threads, s.at.Round(time.Second), lim.maxThreads))
		}
		if s.spoolBytes > lim.maxSpoolBytes {
			out = append(out, fmt.Sprintf("spool holds %s at %s, over max_bytes plus one message (%s)", mib(s.spoolBytes), s.at.Round(time.Second), mib(lim.maxSpoolBytes)))
		}
		if s.spoolDisk > lim.maxSpoolDisk {
			out = append(out, fmt.Sprintf("spool directory takes %s at %s, over the %s ceiling", mib(s.spoolDisk), s.at.Round(time.Second), mib(lim.maxSpoolDisk)))
		}
		if s.at >= lim.warmUp {
			kept = append(kept, s)
		}
	}
	if len(kept) < 4 {
		return append(out, fmt.Sprintf("only %d resource samples after warm-up: too few to judge growth", len(kept)))
	}
	if span := kept[len(kept)-1].at - kept[0].at; span < lim.minGrowthSpan {
		// Too short for both halves to see the same faults (a quota fill in
		// only one half legitimately doubles RSS); the hard ceilings above
		// still hold at every sample.
		return out
	}
	mid := kept[0].at + (kept[len(kept)-1].at-kept[0].at)/2
	grow := func(name string, get func(soakSample) (int64, bool), slack int64, show func(int64) string) {
		var early, late int64 = -1, -1
		for _, s := range kept {
			v, ok := get(s)
			if !ok {
				continue
			}
			if s.at < mid {
				early = max(early, v)
			} else {
				late = max(late, v)
			}
		}
		if early < 0 || late < 0 {
			return
		}
		if limit := int64(float64(early)*lim.growth) + slack; late > limit {
			out = append(out, fmt.Sprintf("%s grows: later half peaks at %s, earlier half at %s (allowed %s)", name, show(late), show(early), show(limit)))
		}
	}
	num := func(v int64) string { return strconv.FormatInt(v, 10) }
	grow("RSS", func(s soakSample) (int64, bool) { return s.rss, true }, lim.slackRSS, mib)
	grow("open files", func(s soakSample) (int64, bool) { return s.fds, true }, lim.slackFDs, num)
	grow("threads", func(s soakSample) (int64, bool) { return s.threads, true }, lim.slackThread, num)
	grow("spool disk use when nearly empty", func(s soakSample) (int64, bool) {
		return s.spoolDisk, s.spoolBytes >= 0 && s.spoolBytes < lim.lowSpool
	}, lim.slackDisk, mib)
	return out
}

func mib(b int64) string { return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20)) }

// TestSoakCeilingsRule proves the ceiling rule fails on growth and on a
// breach, and passes a flat run.
func TestSoakCeilingsRule(t *testing.T) {
	lim := soakLimits{warmUp: 10 * time.Second, maxRSS: 128 << 20, maxFDs: 200, maxThreads: 100,
		maxSpoolBytes: 25 << 20, maxSpoolDisk: 200 << 20, growth: 1.25,
		slackRSS: 8 << 20, slackFDs: 16, slackThread: 8, lowSpool: 2 << 20, slackDisk: 16 << 20}
	run := func(f func(i int, s *soakSample)) []soakSample {
		var out []soakSample
		for i := range 100 {
			s := soakSample{at: time.Duration(i) * 2 * time.Second, rss: 40 << 20, fds: 30, threads: 12, spoolDisk: 8 << 20, spoolBytes: 1 << 20}
			f(i, &s)
			out = append(out, s)
		}
		return out
	}
	if p := checkSoakCeilings(run(func(int, *soakSample) {}), lim); len(p) != 0 {
		t.Fatalf("flat run reported %q", p)
	}
	for name, c := range map[string]struct {
		f    func(i int, s *soakSample)
		want string
	}{
		"RSS leak":       {func(i int, s *soakSample) { s.rss += int64(i) * 800 << 10 }, "RSS grows"},
		"fd leak":        {func(i int, s *soakSample) { s.fds += int64(i) }, "open files grows"},
		"RSS ceiling":    {func(i int, s *soakSample) { s.rss = 140 << 20 }, "over the 128.0MiB ceiling"},
		"spool over":     {func(i int, s *soakSample) { s.spoolBytes = 30 << 20 }, "over max_bytes"},
		"disk creep":     {func(i int, s *soakSample) { s.spoolDisk += int64(i) << 20 }, "spool disk use when nearly empty grows"},
		"thread ceiling": {func(i int, s *soakSample) { s.threads = 500 }, "threads at"},
	} {
		t.Run(name, func(t *testing.T) {
			p := checkSoakCeilings(run(c.f), lim)
			if !strings.Contains(strings.Join(p, "\n"), c.want) {
				t.Fatalf("want %q, got %q", c.want, p)
			}
		})
	}
	// A full spool in the later half alone is not disk growth.
	p := checkSoakCeilings(run(func(i int, s *soakSample) {
		if i > 70 && i < 80 {
			s.spoolBytes, s.spoolDisk = 24<<20, 60<<20
		}
	}), lim)
	if len(p) != 0 {
		t.Fatalf("a quota fill was taken for growth: %q", p)
	}
}
