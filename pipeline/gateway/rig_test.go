package gateway_test

// The rig shared by the end-to-end tests and benchmarks: a reference web
// service behind real HTTPS (test CA, 127.0.0.1:0) with a recorder in front
// of it, a whole gateway built from a YAML configuration and run in-process,
// and MLLP helpers. Nothing is mocked: bytes cross loopback TCP and TLS, the
// spool is a real Badger directory with fsync.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hl7edge/hl7edge/build/freeport"
	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/pipeline/gateway"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/logtest"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
	"github.com/hl7edge/hl7edge/storage"
)

// Secrets that must never reach a log line, an alarm or a health snapshot.
const (
	testLogon    = "gw-e2e"
	testPassword = "pw-Zq7-NEVER-LOG-ME"
	// patientName is in PID-5 of every test message; with logtest.Marker
	// in it, logtest's suite-wide guard watches every log line too.
	patientName = "PATIENTSECRET" + logtest.Marker
)

// rig is one test's working directory and PKI.
type rig struct {
	tb       testing.TB
	dir      string
	ca       *throwawayca.CA
	leaf     *throwawayca.Leaf // valid for 127.0.0.1 and localhost
	caFile   string
	passFile string
	// quietLogs logs at info, as the daemon does by default, instead of
	// debug: for benchmarks, where a debug line per message would be
	// measured as part of the path.
	quietLogs bool
}

func newRig(tb testing.TB) *rig {
	tb.Helper()
	dir := tb.TempDir()
	ca, err := throwawayca.NewCA("hl7edge e2e CA")
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := ca.Issue("127.0.0.1", "127.0.0.1", "localhost")
	if err != nil {
		tb.Fatal(err)
	}
	r := &rig{tb: tb, dir: dir, ca: ca, leaf: leaf, caFile: filepath.Join(dir, "ca.pem"), passFile: filepath.Join(dir, "ws.pass")}
	if err := os.WriteFile(r.caFile, ca.CertPEM, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(r.passFile, []byte(testPassword+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return r
}

func (r *rig) serverTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{r.leaf.TLS}}
}

// ---------------------------------------------------------------------------
// The reference web service.

// wsService is a refserver behind HTTPS with a recorder in front.
type wsService struct {
	tb      testing.TB
	Ref     *refserver.Server
	Store   string
	Mailbox string
	Addr    string // host:port, fixed for the life of the service
	URL     string // the ping URL
	Rec     *recorder
	Conns   atomic.Int64 // TCP connections accepted (http.ConnState StateNew)

	tlsConf *tls.Config
	handler http.Handler
	mu      sync.Mutex
	srv     *http.Server
}

type wsOptions struct {
	Faults    refserver.Faults
	Mailbox   bool   // give it a mailbox directory (data source tests)
	PublicURL string // hand this base URL out in ping replies
	NoRecord  bool   // benchmarks: no recorder in front
	StoreDir  string // where the service stores messages; default under the test's directory
}

// startWebService runs a reference web service that requires testLogon and
// testPassword. It is stopped when the test ends.
func (r *rig) startWebService(name string, o wsOptions) *wsService {
	r.tb.Helper()
	w := &wsService{tb: r.tb, Store: filepath.Join(r.dir, name+"-store"), tlsConf: r.serverTLS()}
	if o.StoreDir != "" {
		w.Store = o.StoreDir
	}
	cfg := refserver.Config{StoreDir: w.Store, Logon: testLogon, Password: testPassword, Faults: o.Faults, PublicURL: o.PublicURL}
	if o.Mailbox {
		w.Mailbox = filepath.Join(r.dir, name+"-mailbox")
		cfg.MailboxDir = w.Mailbox
	}
	ref, err := refserver.New(cfg)
	if err != nil {
		r.tb.Fatal(err)
	}
	w.Ref = ref
	w.handler = ref
	if !o.NoRecord {
		w.Rec = newRecorder(ref)
		w.handler = w.Rec
	}
	// Stop and Start take the service down and bring it back on this
	// address: a port from build/freeport, as one from port 0 is free for
	// any test binary's outgoing connection while the service is down,
	// and one that took it and ended holds it in TIME_WAIT for a minute.
	ln, err := net.Listen("tcp", freePort(r.tb))
	if err != nil {
		r.tb.Fatal(err)
	}
	w.Addr = ln.Addr().String()
	w.URL = "https://" + w.Addr + "/hl7/ping"
	w.serve(ln)
	r.tb.Cleanup(func() {
		w.Stop()
		_ = ref.Close()
	})
	return w
}

func (w *wsService) serve(ln net.Listener) {
	srv := &http.Server{
		Handler:           w.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				w.Conns.Add(1)
			}
		},
	}
	w.mu.Lock()
	w.srv = srv
	w.mu.Unlock()
	tln := tls.NewListener(ln, w.tlsConf)
	go func() { _ = srv.Serve(tln) }()
}

// Stop takes the service off the network: the port refuses connections and
// open connections are closed.
func (w *wsService) Stop() {
	w.mu.Lock()
	srv := w.srv
	w.srv = nil
	w.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Start puts a stopped service back on its old address.
func (w *wsService) Start() {
	w.tb.Helper()
	var ln net.Listener
	var err error
	waitFor(w.tb, 5*time.Second, "the web service's port to be free again", func() bool {
		ln, err = net.Listen("tcp", w.Addr)
		return err == nil
	})
	w.serve(ln)
}

// StoredFiles reads every <GUID>.hl7 in the store.
func (w *wsService) StoredFiles() map[string][]byte {
	w.tb.Helper()
	return hl7Files(w.tb, w.Store)
}

// Received reads received.log.
func (w *wsService) Received() []refserver.Received {
	w.tb.Helper()
	got, err := refserver.ReadReceived(w.Store)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		w.tb.Fatal(err)
	}
	return got
}

func hl7Files(tb testing.TB, dir string) map[string][]byte {
	tb.Helper()
	out := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return out
		}
		tb.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".hl7") || strings.HasPrefix(name, ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			tb.Fatal(err)
		}
		out[strings.TrimSuffix(name, ".hl7")] = b
	}
	return out
}

// countingServer answers every request with HTTP 500 and counts requests
// and TCP connections: the place a gateway must never talk to.
type countingServer struct {
	Addr     string
	Requests atomic.Int64
	Conns    atomic.Int64
}

func (r *rig) startCountingServer(useTLS bool) *countingServer {
	r.tb.Helper()
	c := &countingServer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.tb.Fatal(err)
	}
	c.Addr = ln.Addr().String()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			c.Requests.Add(1)
			http.Error(w, "you should not be here", http.StatusInternalServerError)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				c.Conns.Add(1)
			}
		},
	}
	if useTLS {
		ln = tls.NewListener(ln, r.serverTLS())
	}
	go func() { _ = srv.Serve(ln) }()
	r.tb.Cleanup(func() { _ = srv.Close() })
	return c
}

// ---------------------------------------------------------------------------
// The recorder: what the gateway posted and how the service answered.

// Request kinds as the reference server tells them apart.
const (
	kindPing    = "ping"
	kindPost    = "post"
	kindGet     = "get"
	kindMailbox = "mailbox"
	kindAck     = "ack"
)

type recorder struct {
	next http.Handler

	mu         sync.Mutex
	attrs      map[string]wire.MSH // first post of each GUID
	attrDiffs  []string            // a retry that posted other attributes
	idMismatch []string            // HL7 ID != MESSAGE ID
	requests   map[string]int
	exceptions map[string]int // replies that were EXCEPTIONs with an ERRORCODE
	status500  map[string]int
	noPassword map[string]int // requests without the password (all but data-source pings must carry it)
}

func newRecorder(next http.Handler) *recorder {
	return &recorder{next: next, attrs: map[string]wire.MSH{}, requests: map[string]int{},
		exceptions: map[string]int{}, status500: map[string]int{}, noPassword: map[string]int{}}
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body []byte
	if r.Body != nil {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, 64<<20))
		if err != nil {
			http.Error(w, "unreadable body", http.StatusBadRequest)
			return
		}
	}
	kind := ""
	if el, err := wire.Parse(body); err == nil {
		switch {
		case el.Name == "PING":
			kind = kindPing
		case el.Name == "HL7" && el.Child("MESSAGE") != nil:
			kind = kindPost
			var h wire.HL7
			if err := el.Into(&h); err == nil {
				rc.notePost(h)
			}
		case el.Name == "HL7":
			kind = kindGet
		case el.Name == "HL7MAILBOX":
			kind = kindMailbox
		case el.Name == "HL7ACK":
			kind = kindAck
		}
		if pw, _ := el.Attr("PASSWORD"); pw != testPassword {
			rc.mu.Lock()
			rc.noPassword[kind]++
			rc.mu.Unlock()
		}
	}
	rc.mu.Lock()
	rc.requests[kind]++
	rc.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	cw := &captureWriter{ResponseWriter: w}
	rc.next.ServeHTTP(cw, r)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch {
	case cw.status == http.StatusInternalServerError:
		rc.status500[kind]++
	case bytes.Contains(cw.body.Bytes(), []byte("<EXCEPTION")):
		if el, err := wire.Parse(cw.body.Bytes()); err == nil {
			if code, _ := el.Attr("ERRORCODE"); code != "" {
				rc.exceptions[kind]++
			}
		}
	}
}

func (rc *recorder) notePost(h wire.HL7) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if h.Message.ID != h.ID {
		rc.idMismatch = append(rc.idMismatch, h.ID)
	}
	if prev, ok := rc.attrs[h.ID]; ok {
		if prev != h.MSH {
			rc.attrDiffs = append(rc.attrDiffs, h.ID)
		}
		return
	}
	rc.attrs[h.ID] = h.MSH
}

// Attrs returns the MSH attributes of the first post of guid.
func (rc *recorder) Attrs(guid string) (wire.MSH, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	a, ok := rc.attrs[guid]
	return a, ok
}

// Count returns the requests, EXCEPTION replies and HTTP 500 replies of a kind.
func (rc *recorder) Count(kind string) (requests, exceptions, status500 int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.requests[kind], rc.exceptions[kind], rc.status500[kind]
}

// checkConsistent fails the test if a retry posted other attributes, or an
// HL7 ID differed from its MESSAGE ID, or an authenticated request came
// without the password.
func (rc *recorder) checkConsistent(tb testing.TB, dataSource bool) {
	tb.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.attrDiffs) > 0 {
		tb.Errorf("retries of %d GUIDs posted other MSH attributes than the first post, e.g. %s", len(rc.attrDiffs), rc.attrDiffs[0])
	}
	if len(rc.idMismatch) > 0 {
		tb.Errorf("%d posts had a MESSAGE ID different from the HL7 ID, e.g. %s", len(rc.idMismatch), rc.idMismatch[0])
	}
	for kind, n := range rc.noPassword {
		if kind == kindPing && dataSource {
			continue // the data-source ping carries no password (docs/protocol.md)
		}
		tb.Errorf("%d %s requests came without the configured password", n, kind)
	}
}

type captureWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (c *captureWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.body.Len() < 4096 {
		c.body.Write(b[:min(len(b), 4096-c.body.Len())])
	}
	return c.ResponseWriter.Write(b)
}

// Hijack lets the reference server's "drop the reply" fault close the
// connection through the recorder.
func (c *captureWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := c.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("not hijackable")
	}
	c.status = -1
	return hj.Hijack()
}

// ---------------------------------------------------------------------------
// The gateway.

// gwRig is one running gateway.
type gwRig struct {
	GW       *gateway.Gateway
	Health   *health.Registry
	Logs     *logtest.Buffer
	Alarms   *alarmLog
	MLLPAddr string // the address of the source named "in", when there is one

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// pipelineFile is the part of hl7edge.yaml the gateway reads; its blocks use
// the same decoders as device/config.
type pipelineFile struct {
	Spool        config.Spool          `yaml:"spool"`
	Sources      []gateway.Source      `yaml:"sources"`
	Destinations []gateway.Destination `yaml:"destinations"`
}

// freePort returns a loopback address nobody listens on right now.
func freePort(tb testing.TB) string {
	tb.Helper()
	return freeport.Addr(tb)
}

// expand fills {{DIR}}, {{CA}}, {{PASS}}, {{MLLP}} and the extra keys.
func (r *rig) expand(text string, extra map[string]string) (string, string) {
	mllpAddr := freePort(r.tb)
	pairs := []string{"{{DIR}}", r.dir, "{{CA}}", r.caFile, "{{PASS}}", r.passFile, "{{MLLP}}", mllpAddr, "{{LOGON}}", testLogon}
	for k, v := range extra {
		pairs = append(pairs, "{{"+k+"}}", v)
	}
	return strings.NewReplacer(pairs...).Replace(text), mllpAddr
}

// startGateway parses the YAML (after expand), builds the gateway with
// test options and runs it until the test ends; the test fails if Run does
// not return promptly then, or if a secret reached the logs.
func (r *rig) startGateway(yamlText string, extra map[string]string) *gwRig {
	r.tb.Helper()
	text, mllpAddr := r.expand(yamlText, extra)
	var f pipelineFile
	dec := yaml.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		r.tb.Fatalf("config: %v\n%s", err, text)
	}
	f.Spool.SetDefaults()
	if err := f.Spool.Validate(); err != nil {
		r.tb.Fatal(err)
	}
	if err := gateway.Validate(nil, f.Sources, f.Destinations); err != nil {
		r.tb.Fatalf("config: %v", err)
	}
	g := &gwRig{Logs: &logtest.Buffer{}, Alarms: &alarmLog{}, MLLPAddr: mllpAddr, done: make(chan error, 1)}
	g.Health = health.NewRegistry("e2e-gw", "v1.2.3", nil)
	level := slog.LevelDebug
	if r.quietLogs {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewJSONHandler(g.Logs, &slog.HandlerOptions{Level: level}))
	gw, err := gateway.New(gateway.Config{
		Spool: f.Spool.Storage(), Sources: f.Sources, Destinations: f.Destinations, DeviceID: "e2e-gw", Version: "v1.2.3",
	}, gateway.Options{Log: log, Health: g.Health, Alarm: g.Alarms.add, MinBackoff: 20 * time.Millisecond})
	if err != nil {
		r.tb.Fatal(err)
	}
	g.GW = gw
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	go func() { g.done <- gw.Run(ctx) }()
	r.tb.Cleanup(func() {
		g.Stop(r.tb)
		g.assertNoSecrets(r.tb)
	})
	return g
}

// Stop stops the gateway and waits for Run to return.
func (g *gwRig) Stop(tb testing.TB) {
	tb.Helper()
	g.once.Do(func() {
		g.cancel()
		select {
		case err := <-g.done:
			if err != nil {
				tb.Errorf("gateway Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			tb.Errorf("gateway Run did not return within 30s of its context ending: a goroutine has no way to stop")
		}
	})
}

// assertNoSecrets checks the logs, the alarms and the health snapshot for
// the password and the patient name.
func (g *gwRig) assertNoSecrets(tb testing.TB) {
	tb.Helper()
	snap, _ := json.Marshal(g.Health.Snapshot())
	places := map[string]string{"logs": g.Logs.String(), "alarms": g.Alarms.String(), "health snapshot": string(snap)}
	for where, text := range places {
		for _, secret := range []string{testPassword, patientName} {
			if i := strings.Index(text, secret); i >= 0 {
				tb.Errorf("%q appears in the gateway's %s: ...%s...", secret, where, text[max(0, i-300):min(len(text), i+100)])
			}
		}
	}
}

// Dest returns a destination's health snapshot.
func (g *gwRig) Dest(name string) health.ComponentSnapshot {
	snap := g.Health.Snapshot()
	c, _ := snap.Component(health.Destination, name)
	return c
}

// Source returns a source's health snapshot.
func (g *gwRig) Source(name string) health.ComponentSnapshot {
	snap := g.Health.Snapshot()
	c, _ := snap.Component(health.Source, name)
	return c
}

// Queue returns a destination's spool figures.
func (g *gwRig) Queue(name string) storage.DestStats {
	return g.GW.Spool().Stats().Destinations[name]
}

// Dial connects to the gateway's MLLP source, waiting for it to listen.
func (g *gwRig) Dial(tb testing.TB) *mllp.Client {
	tb.Helper()
	var c *mllp.Client
	waitFor(tb, 15*time.Second, "the gateway's MLLP port to listen", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var err error
		c, err = mllp.Dial(ctx, g.MLLPAddr, nil)
		return err == nil
	})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// sendAll sends msgs in order on c and checks that each is answered AA for
// its own control ID.
func sendAll(c *mllp.Client, msgs [][]byte) error {
	for _, m := range msgs {
		if err := sendExpect(c, m, "AA"); err != nil {
			return err
		}
	}
	return nil
}

func sendExpect(c *mllp.Client, m []byte, want string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ack, err := c.Send(ctx, m)
	if err != nil {
		return err
	}
	code, acked, _, err := hl7.ParseACK(ack)
	if err != nil {
		return err
	}
	ctl := controlID(m)
	if code != want || acked != ctl {
		return fmt.Errorf("message %s answered %s for %q, want %s for it", ctl, code, acked, want)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Messages.

// msgSpec is what a test message is made of.
type msgSpec struct {
	SA, SF, RA, RF   string
	Type, Event      string
	Control, Proc    string
	Version          string
	ExtraSegmentText string
}

// build makes a CR-terminated message with PATIENTSECRET in PID-5. SA and
// SF carry further components so that the test sees only the first is posted.
func (s msgSpec) build() []byte {
	def := func(v, d string) string {
		if v == "" {
			return d
		}
		return v
	}
	var b strings.Builder
	fmt.Fprintf(&b, "MSH|^~\\&|%s^1.2.840.1^ISO|%s^^L|%s|%s|20260102030405||%s^%s^%s_%s|%s|%s|%s\r",
		def(s.SA, "LAB"), def(s.SF, "WARD3"), def(s.RA, "EHR"), def(s.RF, "HOSP"),
		def(s.Type, "ORU"), def(s.Event, "R01"), def(s.Type, "ORU"), def(s.Event, "R01"),
		s.Control, def(s.Proc, "P"), def(s.Version, "2.5.1"))
	fmt.Fprintf(&b, "PID|1||MRN-%s^^^HOSP^MR||DOE^%s^Q||19700101|U\r", s.Control, patientName)
	fmt.Fprintf(&b, "OBX|1|NM|GLU^Glucose||5.%d|mmol/L|3.9-6.1|N|||F\r", len(s.Control))
	b.WriteString(s.ExtraSegmentText)
	return []byte(b.String())
}

func oru(control string) []byte { return msgSpec{Control: control}.build() }

// controlID reads MSH-10.
func controlID(raw []byte) string { return wire.ReadMSH(raw).ControlID }

// ---------------------------------------------------------------------------
// Small things.

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type alarm struct{ Kind, Detail string }

type alarmLog struct {
	mu   sync.Mutex
	list []alarm
}

func (a *alarmLog) add(kind, detail string) {
	a.mu.Lock()
	a.list = append(a.list, alarm{kind, detail})
	a.mu.Unlock()
}

func (a *alarmLog) All() []alarm {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.list)
}

func (a *alarmLog) String() string {
	var b strings.Builder
	for _, x := range a.All() {
		fmt.Fprintf(&b, "%s: %s\n", x.Kind, x.Detail)
	}
	return b.String()
}

// wsGatewayYAML is a gateway with one MLLP source ("in") and one
// web-service destination ("ehr"); {{EXTRA}} adds keys to the destination.
const wsGatewayYAML = `
spool:
  dir: {{DIR}}/spool
  max_bytes: 256MiB
sources:
  - name: in
    type: mllp
    listen: {{MLLP}}
    max_connections: 16
destinations:
  - name: ehr
    type: webservice
    url: {{URL}}
    logon_id: {{LOGON}}
    password_file: {{PASS}}
    ca_file: {{CA}}
    allowed_hosts: ["127.0.0.1"]
    max_backoff: 1s
{{EXTRA}}
`

// startWSGateway starts the usual gateway in front of ws; extra is YAML
// for the destination, indented by four spaces.
func (r *rig) startWSGateway(ws *wsService, extra string) *gwRig {
	r.tb.Helper()
	return r.startGateway(wsGatewayYAML, map[string]string{"URL": ws.URL, "EXTRA": extra})
}

// checkDelivered waits until every message in sent (in that order, over one
// connection or with per-connection order checked by the caller) has been
// delivered to ws's destination "ehr", then checks the store: each message
// stored exactly once under one GUID, byte-identical, and the first arrivals
// in sent order. It returns the GUIDs by control ID and the number of
// duplicate posts (same GUID posted again) that received.log shows.
func checkDelivered(tb testing.TB, g *gwRig, ws *wsService, sent [][]byte, timeout time.Duration) (map[string]string, int) {
	tb.Helper()
	n := len(sent)
	waitFor(tb, timeout, fmt.Sprintf("%d messages delivered to ehr", n), func() bool {
		q := g.Queue("ehr")
		return q.Queued == 0 && q.Delivered >= uint64(n)
	})
	if q := g.Queue("ehr"); q.Delivered != uint64(n) || q.Dead != 0 {
		tb.Errorf("spool says ehr delivered %d and has %d dead; want %d and 0", q.Delivered, q.Dead, n)
	}
	byCtl := map[string][]byte{}
	for _, m := range sent {
		byCtl[controlID(m)] = m
	}
	files := ws.StoredFiles()
	if len(files) != n {
		tb.Errorf("the service's store holds %d messages, want %d", len(files), n)
	}
	guids := map[string]string{}
	for guid, data := range files {
		ctl := controlID(data)
		want, ok := byCtl[ctl]
		switch {
		case !ok:
			tb.Errorf("stored %s holds control ID %q, which was never sent", guid, ctl)
		case !bytes.Equal(data, want):
			tb.Errorf("stored %s (control ID %s) differs from what was sent:\n got %q\nwant %q", guid, ctl, data, want)
		}
		if prev, dup := guids[ctl]; dup {
			tb.Errorf("control ID %s stored under two GUIDs %s and %s", ctl, prev, guid)
		}
		guids[ctl] = guid
	}
	var order []string
	dups := 0
	firstSeen := map[string]bool{}
	for _, rec := range ws.Received() {
		if _, ok := files[rec.GUID]; !ok {
			tb.Errorf("received.log names GUID %s that is not in the store", rec.GUID)
		}
		if rec.Duplicate {
			dups++
			if !firstSeen[rec.GUID] {
				tb.Errorf("received.log marks GUID %s duplicate before its first arrival", rec.GUID)
			}
			continue
		}
		if firstSeen[rec.GUID] {
			tb.Errorf("received.log stores GUID %s twice (Duplicate=no both times)", rec.GUID)
		}
		firstSeen[rec.GUID] = true
		order = append(order, rec.ControlID)
	}
	var want []string
	for _, m := range sent {
		want = append(want, controlID(m))
	}
	if !slices.Equal(order, want) {
		tb.Errorf("arrival order differs from sending order:\n got %v\nwant %v", abbreviate(order), abbreviate(want))
	}
	return guids, dups
}

func abbreviate(s []string) []string {
	if len(s) <= 12 {
		return s
	}
	return append(append(slices.Clone(s[:6]), "..."), s[len(s)-6:]...)
}

// numbered makes n ORU messages with control IDs prefix-000 onwards.
func numbered(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = oru(fmt.Sprintf("%s-%03d", prefix, i))
	}
	return out
}
