package powercut

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/build/freeport"
	"github.com/hl7edge/hl7edge/build/powercut/nbd"
	"github.com/hl7edge/hl7edge/build/skipnote"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
	"github.com/hl7edge/hl7edge/storage"
)

// guestConfig is hl7edge's configuration inside the VM: MLLP in, the host's
// reference web service as pull source and as destination (ehr, one lane),
// a second one with lanes (ehr-lanes), the host's MLLP receiver (reports:
// large reports and cardiology notes, down for some boots), a host receiver
// that refuses everything it gets (rejects: the messages marked for it are
// dead-lettered at the first AR) and a file destination on the ext4 disk.
// Segments of 16 messages make the spool drop delivered data (and so
// rewrite its LSM tree) all the time. Arguments: the two web services'
// ports, extra spool keys, the two receivers' ports.
const guestConfig = `device: {id: powercut-vm, board: sim}
spool: {dir: /data/spool, max_bytes: 1536MiB, segment_messages: 16%[3]s}
admin: {socket: /run/admin.sock}
log: {level: debug}
sources:
  - {name: mllp-in, type: mllp, listen: "0.0.0.0:2575", max_message_bytes: 8MiB}
  - name: orders
    type: webservice
    url: http://10.0.2.2:%[1]d/hl7/ping
    logon_id: powercut
    password_file: /etc/hl7edge.yaml
    allow_insecure_http: true
    allowed_hosts: ["10.0.2.2"]
    frequency: 1s
    max_backoff: 1s
destinations:
  - name: archive
    type: file
    dir: /data/out
    max_backoff: 1s
    match: {any: ["MSH-3.1 in LAB,CARDIO,HIS", "MSH-5.1 in ARCHIVE"]}
  - name: ehr
    type: webservice
    url: http://10.0.2.2:%[1]d/hl7/ping
    logon_id: powercut
    password_file: /etc/hl7edge.yaml
    allow_insecure_http: true
    allowed_hosts: ["10.0.2.2"]
    max_backoff: 1s
    match: {all: ["MSH-3.1 in LAB,PROBE,HIS"]}
  - name: ehr-lanes
    type: webservice
    url: http://10.0.2.2:%[2]d/hl7/ping
    logon_id: powercut
    password_file: /etc/hl7edge.yaml
    allow_insecure_http: true
    allowed_hosts: ["10.0.2.2"]
    max_backoff: 1s
    lanes: 4
    match: {all: ["MSH-3.1 in LAB"]}
  - name: reports
    type: mllp
    address: 10.0.2.2:%[4]d
    timeout: 60s
    max_backoff: 1s
    match: {all: ["MSH-3.1 in RADSYS,CARDIO", "MSH-6.1 not-in NOWHERE"]}
  - name: rejects
    type: mllp
    address: 10.0.2.2:%[5]d
    max_attempts: 1
    max_backoff: 1s
    match: {all: ["MSH-6.1 in NOWHERE"]}
`

// spoolExtra runs the value log's clean-up every 2 s instead of every 10
// minutes (spool.value_log_cleanup), so it happens during the cuts.
func spoolExtra() string { return ", value_log_cleanup: 2s" }

// Cut moments, taken in turn.
const (
	atACK     = "after-ack"       // right after the gateway's Nth AA of this boot
	atRandom  = "random"          // a random moment under load
	atGC      = "segment-clean"   // as the spool drops delivered segments
	atPost    = "ws-post"         // while a web-service post is in flight
	atPullAck = "pull-ack"        // while a mailbox ack is in flight
	perMailbx = 20                // mailbox messages offered per boot
	bootLimit = 180 * time.Second // TCG on a loaded 2-core machine is slow
)

var moments = []string{atACK, atRandom, atGC, atPost, atPullAck}

// TestPowerCut is the power-cut campaign: POWERCUT_CUTS cuts, then
// POWERCUT_EIO injected write errors, each followed by a cut (make powercut
// CUTS=100 EIO=50; make test runs 5 and 2). Without either it skips.
func TestPowerCut(t *testing.T) {
	cuts, _ := strconv.Atoi(os.Getenv("POWERCUT_CUTS"))
	eios, _ := strconv.Atoi(os.Getenv("POWERCUT_EIO"))
	if cuts <= 0 && eios <= 0 {
		t.Skip("set POWERCUT_CUTS (power cuts) and/or POWERCUT_EIO (injected write errors) to run the power-cut rig (make powercut CUTS=100 EIO=50; make test runs 5 cuts and 2 injections)")
	}
	if tools, pkgs := missingTools(); tools != "" {
		skipnote.Missing(t, "the power-cut rig (make powercut-short)", tools, pkgs)
	}
	r := newRig(t)
	r.run(cuts, eios)
}

type rig struct {
	t        *testing.T
	dir      string
	image    string
	initrd   string
	vmlinuz  string
	accel    string
	mllpPort int
	ctlPort  int
	wsPort   int
	ws2Port  int // ehr-lanes' web service
	mailbox  string
	store    string
	store2   string    // what ehr-lanes posted
	reports  *receiver // down for some boots
	rejects  *receiver // answers AR to everything
	disk     *nbd.Disk
	nbdAddr  string
	ledger   *ledger
	mailN    int

	mu  sync.Mutex
	cur *vm
	// fire, when set, cuts the power now; the web service calls it on a
	// request of kind fireOn.
	fire   func(how string)
	fireOn string
	// boots are when each boot began, and when the spool re-opened after
	// a failed sync: the order check's boundaries.
	boots []time.Time

	fig figures
}

// figures are what the campaign reports (docs/power-loss.md, "Figures").
type figures struct {
	Cuts            int            `json:"cuts"`
	ForgettingDisk  int            `json:"cuts_with_forgetting_disk"`
	WritebackDisk   int            `json:"cuts_with_writeback_disk"`
	ByMoment        map[string]int `json:"cuts_by_moment"`
	Accel           string         `json:"accel"`
	Acked           int            `json:"mllp_acked"`
	NoVerdict       int            `json:"mllp_sent_without_verdict"`
	Refused         int            `json:"mllp_refused"`
	Pulled          int            `json:"mailbox_messages_acked_upstream"`
	LostFile        int            `json:"lost_file_destination"`
	LostWS          int            `json:"lost_webservice_destination"`
	LostPull        int            `json:"lost_pull"`
	TwoGUIDs        int            `json:"delivered_under_two_guids"`
	Redelivered     int            `json:"ws_redeliveries_same_guid"`
	TmpLeftByCuts   int            `json:"tmp_files_left_by_cuts"`
	TmpLeftAtEnd    int            `json:"tmp_files_left_after_restart"`
	SpoolOpenFailed int            `json:"spool_open_failures"`
	BootToACK       []float64      `json:"boot_to_first_ack_seconds"`
	Forgotten       int            `json:"forgotten_4k_blocks"`
	KeptAnyway      int            `json:"unflushed_4k_blocks_written_anyway"`
	NBDFlushes      int            `json:"nbd_flushes"`
	Seconds         float64        `json:"seconds"`

	LargeAcked        int        `json:"large_reports_acked"`
	LargeBytes        int64      `json:"large_report_bytes_acked"`
	ReceiverDownBoots int        `json:"boots_with_reports_receiver_down"`
	LostLanes         int        `json:"lost_webservice_lanes_destination"`
	LostReports       int        `json:"lost_reports_destination"`
	DeadListed        int        `json:"dead_letters_listed"`
	DeadUnreadable    int        `json:"dead_letters_unreadable"`
	LostDead          int        `json:"refused_but_not_dead_lettered"`
	RefusedDelivered  int        `json:"answered_ae_but_delivered"`
	DeadListError     string     `json:"dead_list_error,omitempty"`
	OrderBroken       []string   `json:"order_violations,omitempty"`
	LateCopies        int        `json:"second_copies_after_a_later_message"`
	EIO               eioFigures `json:"eio"`
	Traces            int        `json:"traces_read"`
	TraceMissing      int        `json:"trace_events_missing"`
	TraceTwice        int        `json:"trace_events_twice"`
	TraceReadError    string     `json:"trace_read_error,omitempty"`
}

func freePort(t *testing.T) int { return freeport.Take(t) }

func newRig(t *testing.T) *rig {
	cache, err := cacheDir()
	if err != nil {
		t.Fatal(err)
	}
	vmlinuz, mods, err := kernel(cache)
	if err != nil {
		t.Skipf("SKIPPED power-cut rig: no Debian kernel: %v", err)
	}
	order, err := moduleOrder(mods)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if d := os.Getenv("POWERCUT_KEEP"); d != "" { // keep the image and console for a post-mortem
		dir = d
		_ = os.MkdirAll(dir, 0o755)
	}
	r := &rig{t: t, dir: dir, vmlinuz: vmlinuz, fig: figures{ByMoment: map[string]int{}}}
	r.mllpPort, r.ctlPort, r.wsPort, r.ws2Port = freePort(t), freePort(t), freePort(t), freePort(t)
	r.reports = newReceiver(t, func(string) bool { return false })
	r.rejects = newReceiver(t, func(string) bool { return true })
	r.rejects.setUp(true)
	initBin, hl7Bin := filepath.Join(dir, "init"), filepath.Join(dir, "hl7edge")
	if err := goBuild(initBin, "./build/powercut/guestinit"); err != nil {
		t.Fatal(err)
	}
	if err := goBuild(hl7Bin, "./cmd/hl7edge"); err != nil {
		t.Fatal(err)
	}
	r.initrd = filepath.Join(dir, "initrd.cpio")
	if err := initramfs(r.initrd, initBin, hl7Bin, fmt.Appendf(nil, guestConfig, r.wsPort, r.ws2Port, spoolExtra(), r.reports.port, r.rejects.port), order); err != nil {
		t.Fatal(err)
	}
	r.image = filepath.Join(dir, "disk.img")
	if err := os.WriteFile(r.image, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(r.image, 4<<30); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "spool", r.image).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	r.mailbox, r.store, r.store2 = filepath.Join(dir, "mailbox"), filepath.Join(dir, "store"), filepath.Join(dir, "store-lanes")
	for _, d := range []string{r.mailbox, filepath.Join(dir, "mailbox-lanes")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r.ledger, err = openLedger(filepath.Join(dir, "ledger.txt"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.ledger.f.Close() })
	r.startWebService()
	r.startPlainWebService(r.ws2Port, r.store2, filepath.Join(dir, "mailbox-lanes"))
	r.disk, err = nbd.Open(r.image)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.nbdAddr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = r.disk.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-r.disk.Idle(); r.disk.Close() })
	r.accel = r.pickAccel(filepath.Join(cache, "accel"))
	r.fig.Accel = r.accel
	t.Logf("rig in %s: kernel %s, %d modules, accel %s", dir, filepath.Base(vmlinuz), len(order), r.accel)
	return r
}

// pickAccel boots once with KVM and falls back to TCG when the kernel does
// not reach /init in time: on some nested KVM hosts a stock kernel hangs.
// The answer is kept for a day in memo (outside the repository), beside the
// kernel it was for, so make test does not wait a minute for it every run.
func (r *rig) pickAccel(memo string) string {
	if a := os.Getenv("POWERCUT_ACCEL"); a != "" {
		return a
	}
	key := filepath.Base(r.vmlinuz)
	if st, err := os.Stat(memo); err == nil && time.Since(st.ModTime()) < 24*time.Hour {
		b, _ := os.ReadFile(memo)
		if a, k, _ := strings.Cut(strings.TrimSpace(string(b)), " "); k == key && (a == "kvm" || a == "tcg") {
			r.t.Logf("accel %s as found %s ago (%s; POWERCUT_ACCEL overrides)", a, time.Since(st.ModTime()).Round(time.Minute), memo)
			return a
		}
	}
	a := r.probeAccel()
	_ = os.WriteFile(memo, []byte(a+" "+key+"\n"), 0o644)
	return a
}

// probeAccel is pickAccel's boot with KVM.
func (r *rig) probeAccel() string {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		r.t.Logf("no usable /dev/kvm (%v): TCG", err)
		return "tcg"
	}
	f.Close()
	v, err := bootVM(r.vmConfig("kvm", false))
	if err != nil {
		r.t.Fatal(err)
	}
	_, err = v.waitLine("init: started", 60*time.Second)
	v.cut()
	if err != nil {
		r.t.Logf("KVM boot did not reach /init within 60s (%v): falling back to TCG\n%s", err, v.tail(10))
		return "tcg"
	}
	return "kvm"
}

func (r *rig) vmConfig(accel string, forgetting bool) vmConfig {
	drive := "file=" + r.image + ",format=raw,if=virtio,cache=writeback"
	if forgetting {
		drive = "file=nbd://" + r.nbdAddr + ",format=raw,if=virtio,cache=none"
	}
	return vmConfig{
		kernel: r.vmlinuz, initrd: r.initrd, accel: accel, drive: drive,
		fwd: []string{
			fmt.Sprintf("hostfwd=tcp:127.0.0.1:%d-:2575", r.mllpPort),
			fmt.Sprintf("hostfwd=tcp:127.0.0.1:%d-:2576", r.ctlPort),
		},
		console: filepath.Join(r.dir, "console.log"),
	}
}

// startWebService runs the reference web service on the host, seen from
// the guest as 10.0.2.2 (qemu user networking's address for the host's
// loopback). Its handler is where the post and pull-ack cuts happen.
func (r *rig) startWebService() {
	ref, err := refserver.New(refserver.Config{StoreDir: r.store, MailboxDir: r.mailbox})
	if err != nil {
		r.t.Fatal(err)
	}
	var n atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(body))
		kind := ""
		if el, err := wire.Parse(body); err == nil {
			switch {
			case el.Name == "HL7" && el.Child("MESSAGE") != nil:
				kind = atPost
			case el.Name == "HL7ACK":
				kind = atPullAck
			}
		}
		r.mu.Lock()
		fire, on := r.fire, r.fireOn
		r.mu.Unlock()
		if kind == "" || kind != on || fire == nil {
			ref.ServeHTTP(w, req)
			return
		}
		// Alternately cut before the service has the request and after it
		// has acted on it but before the gateway hears the answer.
		if n.Add(1)%2 == 0 {
			fire(kind)
			panic(http.ErrAbortHandler)
		}
		rec := &discard{h: http.Header{}}
		ref.ServeHTTP(rec, req)
		fire(kind)
		panic(http.ErrAbortHandler)
	})
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", r.wsPort))
	if err != nil {
		r.t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	go func() { _ = srv.Serve(ln) }()
	r.t.Cleanup(func() { srv.Close(); ref.Close() })
}

// startPlainWebService runs a reference web service with no cuts in it:
// ehr-lanes posts there.
func (r *rig) startPlainWebService(port int, store, mailbox string) {
	ref, err := refserver.New(refserver.Config{StoreDir: store, MailboxDir: mailbox})
	if err != nil {
		r.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		r.t.Fatal(err)
	}
	srv := &http.Server{Handler: ref, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	r.t.Cleanup(func() { srv.Close(); ref.Close() })
}

// discard is a ResponseWriter whose answer never reaches the gateway.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// addMail offers n more messages through the mailbox.
func (r *rig) addMail(n int) {
	for range n {
		r.mailN++
		id := fmt.Sprintf("P%06d", r.mailN)
		msg := fmt.Sprintf("MSH|^~\\&|HIS|HOSP|GW|WARD3|20261130||ORM^O01|%s|P|2.5.1\rPID|1||MRN%s\rORC|NW|%s\r", id, id, id)
		if err := os.WriteFile(filepath.Join(r.mailbox, id), []byte(msg), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
}

// boot starts the VM and waits until the gateway has opened its spool and
// started; a spool that does not open fails the campaign with the console.
func (r *rig) boot(forgetting bool) *vm {
	<-r.disk.Idle() // the last session's cache is gone before the next boot
	r.mu.Lock()
	r.boots = append(r.boots, time.Now())
	r.mu.Unlock()
	v, err := bootVM(r.vmConfig(r.accel, forgetting))
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.cur = v
	r.mu.Unlock()
	line, err := v.waitLine("init: mounted", bootLimit, "init: FAILED")
	if err != nil {
		v.cut()
		r.t.Fatalf("boot: %v\n%s", err, v.tail(40))
	}
	if i := strings.Index(line, "tmp_left="); i >= 0 {
		n, _ := strconv.Atoi(strings.TrimSpace(line[i+len("tmp_left="):]))
		r.fig.TmpLeftByCuts += n
	}
	// An unreadable spool does not stop the daemon (it answers AE, see
	// docs/power-loss.md), so its log line is what tells.
	if _, err := v.waitLine("hl7edge started", bootLimit, "init: hl7edge exited", "init: FAILED", "spool unreadable", "spool is unreadable"); err != nil {
		r.fig.SpoolOpenFailed++
		v.cut()
		r.t.Fatalf("the gateway did not start after a cut: %v\n%s", err, v.tail(60))
	}
	return v
}

func (r *rig) run(cuts, eios int) {
	t := r.t
	began := time.Now()
	ctx, stopLoad := context.WithCancel(context.Background())
	acks := make(chan struct{}, 1<<16)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() { r.load(ctx, w, acks) })
	}
	for i := range cuts {
		forgetting := i%2 == 1
		// Every other forgetting cut writes half of the unflushed blocks
		// anyway, in no order: a cache that was part way through.
		r.disk.SetKeep(map[bool]float64{true: 0.5, false: 0}[i%4 == 3])
		moment := moments[i%len(moments)]
		// Every third boot the reports receiver is down: its messages
		// (the large ones) stay queued while the rest are delivered.
		down := i%3 == 1
		r.reports.setUp(!down)
		if down {
			r.fig.ReceiverDownBoots++
		}
		v := r.bootToACK(forgetting, acks)
		how := r.cutAt(v, moment, acks)
		r.fig.Cuts++
		r.fig.ByMoment[how]++
		if forgetting {
			r.fig.ForgettingDisk++
		} else {
			r.fig.WritebackDisk++
		}
		t.Logf("cut %d/%d: %s, %s disk, reports receiver %s, %d ACKed so far", i+1, cuts, how,
			map[bool]string{true: "forgetting", false: "writeback"}[forgetting], map[bool]string{true: "down", false: "up"}[down], r.ledger.count('A'))
	}
	r.reports.setUp(true)
	r.disk.SetKeep(0)
	for j := range eios {
		v := r.bootToACK(true, acks)
		r.injectEIO(v, j)
		t.Logf("EIO injection %d/%d done, %d ACKed so far", j+1, eios, r.ledger.count('A'))
	}
	stopLoad()
	wg.Wait()
	r.drainAndCheck()
	st := r.disk.Stats()
	r.fig.Forgotten, r.fig.KeptAnyway, r.fig.NBDFlushes = st.Forgotten, st.Kept, st.Flushes
	r.fig.EIO.Failed, r.fig.EIO.LostBlocks = st.Failed, st.Lost
	r.fig.Seconds = time.Since(began).Seconds()
	b, _ := json.MarshalIndent(r.fig, "", "  ")
	t.Logf("figures:\n%s", b)
	if p := os.Getenv("POWERCUT_REPORT"); p != "" {
		_ = os.WriteFile(p, b, 0o644)
	}
	f := r.fig
	if f.LostFile+f.LostWS+f.LostPull+f.LostLanes+f.LostReports+f.LostDead+f.TwoGUIDs+f.TmpLeftAtEnd+f.SpoolOpenFailed+len(f.OrderBroken)+f.TraceMissing > 0 || f.DeadListError != "" || f.TraceReadError != "" {
		t.Errorf("the power-loss promise is broken: %s", b)
	}
}

// bootToACK boots and waits for the first ACK: the gateway is taking
// messages again.
func (r *rig) bootToACK(forgetting bool, acks chan struct{}) *vm {
	for len(acks) > 0 { // what earlier boots left in the channel
		<-acks
	}
	v := r.boot(forgetting)
	select {
	case <-acks:
		r.fig.BootToACK = append(r.fig.BootToACK, time.Since(v.start).Seconds())
	case <-time.After(bootLimit):
		v.cut()
		r.t.Fatalf("boot %d: no ACK within %s of boot\n%s", len(r.boots), bootLimit, v.tail(40))
	}
	return v
}

// cutAt cuts the power at the chosen moment, or at a random one when the
// moment does not come within a while (nothing left to post, say).
func (r *rig) cutAt(v *vm, moment string, acks chan struct{}) string {
	done := make(chan string, 1)
	var once sync.Once
	fire := func(how string) {
		once.Do(func() {
			v.cut()
			done <- how
		})
	}
	// The moment may not come (nothing left to post, say): then a random one.
	fallback := time.Duration(20+rand.IntN(10)) * time.Second
	switch moment {
	case atRandom:
		time.AfterFunc(time.Duration(rand.Int64N(int64(5*time.Second))), func() { fire(atRandom) })
	case atACK:
		k := 1 + rand.IntN(60)
		go func() {
			for range k {
				select {
				case <-acks:
				case <-v.exited:
					return
				}
			}
			fire(atACK)
		}()
	case atGC:
		v.watch(func(line string) {
			if strings.Contains(line, "spool dropping delivered segments") || strings.Contains(line, "spool dropped delivered segments") {
				go fire(atGC)
			}
		})
	case atPost, atPullAck:
		r.mu.Lock()
		r.fire, r.fireOn = fire, moment
		r.mu.Unlock()
	}
	// New mail arrives under load, once the hooks are armed, so pull-source
	// acks happen while the cut may come.
	r.addMail(perMailbx)
	var how string
	select {
	case how = <-done:
	case <-time.After(fallback):
		fire("fallback-random")
		how = <-done
	}
	r.mu.Lock()
	r.fire, r.fireOn = nil, ""
	r.mu.Unlock()
	<-r.disk.Idle()
	return how
}

// load sends over one MLLP connection until ctx ends. A message is sent
// once: one without a verdict (the power went) is never sent again, so a
// control ID delivered under two GUIDs can only be the gateway's doing.
func (r *rig) load(ctx context.Context, w int, acks chan struct{}) {
	addr := fmt.Sprintf("127.0.0.1:%d", r.mllpPort)
	n := 0
	for ctx.Err() == nil {
		c, err := mllp.Dial(ctx, addr, nil)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for ctx.Err() == nil {
			n++
			id, msg := message(w, n)
			if r.send(ctx, c, id, msg) && acks != nil {
				select {
				case acks <- struct{}{}:
				default:
				}
			}
			if r.ledger.last(id) == 'U' {
				break
			}
		}
		c.Close()
		time.Sleep(50 * time.Millisecond)
	}
}

// send sends one message and writes its verdict in the ledger; it says
// whether the answer was AA (or CA).
func (r *rig) send(ctx context.Context, c *mllp.Client, id string, msg []byte) bool {
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	v := verdict{ID: id, Sent: time.Now(), Bytes: len(msg)}
	ack, err := c.Send(sctx, msg)
	v.Answered = time.Now()
	kind := byte('U')
	if err == nil {
		v.Code = ackCode(ack)
		kind = 'N'
		if v.Code == "AA" || v.Code == "CA" {
			kind = 'A'
		}
	}
	r.ledger.record(kind, v)
	return kind == 'A'
}

// ledger is the host's record of every control ID sent: A (AA: the
// gateway promised it), N (refused), U (no verdict), and every verdict
// with its times. It is on the host's disk, which loses no power in this
// rig.
type ledger struct {
	mu       sync.Mutex
	f        *os.File
	ids      map[byte][]string
	kinds    map[string]byte
	verdicts []verdict
	large    int
	largeB   int64
}

func openLedger(p string) (*ledger, error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &ledger{f: f, ids: map[byte][]string{}, kinds: map[string]byte{}}, nil
}

func (l *ledger) record(kind byte, v verdict) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ids[kind] = append(l.ids[kind], v.ID)
	l.kinds[v.ID] = kind
	l.verdicts = append(l.verdicts, v)
	if kind == 'A' && v.Bytes >= largeMin {
		l.large++
		l.largeB += int64(v.Bytes)
	}
	fmt.Fprintf(l.f, "%c %s %s %d\n", kind, v.ID, v.Code, v.Bytes)
}

// last is the kind of id's verdict, 0 when it has none.
func (l *ledger) last(id string) byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.kinds[id]
}

// since is every verdict answered at or after t.
func (l *ledger) since(t time.Time) []verdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []verdict
	for _, v := range l.verdicts {
		if !v.Answered.Before(t) {
			out = append(out, v)
		}
	}
	return out
}

func (l *ledger) count(kind byte) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ids[kind])
}

// control asks guestinit's control port.
func (r *rig) control(cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.ctlPort), 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(90 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", cmd); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// drainAndCheck boots once more without load (and with the reports
// receiver up), waits until every queue is empty and the mailbox is
// drained, lists the dead letters, reads every trace, shuts the VM down
// cleanly, and compares every destination and the traces with the ledger.
func (r *rig) drainAndCheck() {
	t := r.t
	r.reports.setUp(true)
	v := r.boot(false)
	r.drain(v)
	dead := r.deadLetters("rejects")
	traces, traceErr := r.readTraces()
	// The guest powers off right after it answers, and qemu may go before
	// the answer reaches the host: the console says whether the disk was
	// unmounted.
	_, _ = r.control("halt")
	select {
	case <-v.exited:
	case <-time.After(2 * time.Minute):
		v.cut()
	}
	v.mu.Lock()
	unmounted := slices.Contains(v.lines, "init: unmounted")
	v.mu.Unlock()
	if !unmounted {
		t.Errorf("the final shutdown did not unmount the disk:\n%s", v.tail(20))
	}
	out := filepath.Join(r.dir, "out")
	_ = os.RemoveAll(out)
	if b, err := exec.Command("debugfs", "-R", "rdump /out "+r.dir, r.image).CombinedOutput(); err != nil {
		t.Fatalf("debugfs rdump: %v\n%s", err, b)
	}
	tmp, _ := filepath.Glob(filepath.Join(out, ".tmp-*"))
	r.fig.TmpLeftAtEnd = len(tmp)
	files, posted, lanes := byControlID(t, out), byControlID(t, r.store), byControlID(t, r.store2)
	lost := r.checkDelivered(files, posted, lanes, dead)
	r.explainLost(lost, traces)
	r.checkTraceLedger(files, posted, lanes, dead, traces, traceErr)
	r.checkOrders()
}

// drain waits until every queue is empty and the mailbox is drained; only
// rejects may keep dead letters.
func (r *rig) drain(v *vm) {
	t := r.t
	deadline := time.Now().Add(15 * time.Minute)
	quiet := 0
	for quiet < 3 {
		if time.Now().After(deadline) {
			v.cut()
			t.Fatalf("the gateway did not drain within 15 minutes\n%s", v.tail(40))
		}
		time.Sleep(2 * time.Second)
		out, err := r.control("stats")
		var st storage.Stats
		if err != nil || json.Unmarshal([]byte(out), &st) != nil || len(st.Destinations) == 0 {
			quiet = 0
			continue
		}
		left, _ := os.ReadDir(r.mailbox)
		busy := len(left) > 0
		for name, d := range st.Destinations {
			if d.Queued > 0 {
				busy = true
			}
			if d.Dead > 0 && name != "rejects" && quiet == 2 {
				t.Errorf("destination %s has %d dead letters", name, d.Dead)
			}
		}
		if busy {
			quiet = 0
		} else {
			quiet++
		}
	}
}

// byControlID reads every <GUID>.hl7 in dir: control ID → GUIDs.
func byControlID(t *testing.T, dir string) map[string][]string {
	files, _ := filepath.Glob(filepath.Join(dir, "*.hl7"))
	out := map[string][]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := hl7.Parse(b)
		if err != nil {
			t.Errorf("%s does not parse: %v (a torn file?)", f, err)
			continue
		}
		id := m.Header().ControlID
		out[id] = append(out[id], strings.TrimSuffix(filepath.Base(f), ".hl7"))
	}
	return out
}
