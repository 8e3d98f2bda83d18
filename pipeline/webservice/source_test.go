package webservice

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hl7edge/hl7edge/pipeline/logtest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
	"github.com/hl7edge/hl7edge/pipeline/webservice/internal/wstest"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

// memIntake stands in for the spool: it stores each RemoteID once and says
// Duplicate when one is offered again, as the real intake does.
type memIntake struct {
	mu      sync.Mutex
	stored  []flow.Inbound
	byID    map[string]bool
	offers  int
	verdict func(in flow.Inbound, offer int) flow.Code // nil: accept
}

func (m *memIntake) Accept(_ context.Context, in flow.Inbound) flow.Outcome {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.offers++
	if m.byID == nil {
		m.byID = map[string]bool{}
	}
	if m.byID[in.RemoteID] {
		return flow.Outcome{Code: flow.Accepted, Duplicate: true}
	}
	if m.verdict != nil {
		if c := m.verdict(in, m.offers); c != flow.Accepted {
			return flow.Outcome{Code: c, Reason: "test intake says " + string(c)}
		}
	}
	m.byID[in.RemoteID] = true
	m.stored = append(m.stored, flow.Inbound{Source: in.Source, Raw: append([]byte(nil), in.Raw...), RemoteID: in.RemoteID})
	return flow.Outcome{Code: flow.Accepted, GUID: uuid.NewString(), ControlID: wire.ReadMSH(in.Raw).ControlID}
}

func (m *memIntake) Stored() []flow.Inbound {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]flow.Inbound(nil), m.stored...)
}

type sourceRig struct {
	pki     *wstest.PKI
	ref     *refserver.Server
	srv     *wstest.Server
	mailbox string
	intake  *memIntake
	src     *Source
	reg     *health.Registry
	health  *health.Component
	logs    *logtest.Buffer
	want    map[string][]byte // mailbox ID -> bytes
	ids     []string          // in mailbox order
}

func newSourceRig(t *testing.T, n int, modServer func(*refserver.Config), modSrc func(*SourceConfig)) *sourceRig {
	t.Helper()
	r := &sourceRig{pki: wstest.NewPKI(t), mailbox: t.TempDir(), intake: &memIntake{}, logs: &logtest.Buffer{}, want: map[string][]byte{}}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("ORD%05d", i)
		raw := []byte(fmt.Sprintf("MSH|^~\\&|HIS|HOSP|LAB|WARD3|20250101||ORM^O01|ORD%05d|P|2.3\rPID|1||TEST%05d\rORC|NW|%d\r", i, i, i))
		if err := os.WriteFile(filepath.Join(r.mailbox, id), raw, 0o600); err != nil {
			t.Fatal(err)
		}
		r.want[id] = raw
		r.ids = append(r.ids, id)
	}
	r.ref, r.srv = startRef(t, r.pki, refserver.Config{StoreDir: t.TempDir(), MailboxDir: r.mailbox}, modServer)
	cfg := SourceConfig{Peer: testPeer(t, r.pki, r.srv.URL+"/hl7/ping"), Reping: true}
	if modSrc != nil {
		modSrc(&cfg)
	}
	r.reg = health.NewRegistry("ward3-gw", "1.0.0", nil)
	r.health = r.reg.Component(health.Source, "orders", "webservice")
	src, err := NewSource("orders", cfg, r.intake, Options{
		Log:       slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Health:    r.health,
		DeviceID:  "ward3-gw",
		PMVersion: "1.4.2",
		Loop:      r.reg.Loop("source orders"),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Poll and back off fast: the test is about what arrives, not when.
	src.frequency = 5 * time.Millisecond
	src.backoff.Min, src.backoff.Max = time.Millisecond, 20*time.Millisecond
	r.src = src
	t.Cleanup(func() {
		if strings.Contains(r.logs.String(), testPassword) {
			t.Error("the password appears in the log output")
		}
	})
	return r
}

// run starts the source and returns a stop function that cancels it and
// proves Run returns.
func (r *sourceRig) run(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.src.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v after cancel, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("Run did not return within 5s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func mailboxEmpty(dir string) bool {
	e, _ := os.ReadDir(dir)
	return len(e) == 0
}

// checkArrived proves each mailbox message reached intake exactly once, in
// mailbox order, byte for byte, under its remote ID.
func (r *sourceRig) checkArrived(t *testing.T, ids []string) {
	t.Helper()
	got := r.intake.Stored()
	if len(got) != len(ids) {
		t.Fatalf("intake stored %d messages, want %d", len(got), len(ids))
	}
	for i, in := range got {
		if in.RemoteID != ids[i] {
			t.Fatalf("stored #%d is %s, want %s (mailbox order broken)", i, in.RemoteID, ids[i])
		}
		if string(in.Raw) != string(r.want[in.RemoteID]) || in.Source != "orders" {
			t.Fatalf("stored #%d (%s) differs from the mailbox file", i, in.RemoteID)
		}
	}
}

func TestSourceFiftyExactlyOnceUnderFaults(t *testing.T) {
	r := newSourceRig(t, 50, func(c *refserver.Config) {
		c.Faults = refserver.Faults{DropAckEvery: 10, ExceptionOnGetEvery: 13, LoseAckEvery: 7, Status500OnMailboxEvery: 5}
	}, nil)
	stop := r.run(t)
	waitFor(t, "an empty mailbox", func() bool { return mailboxEmpty(r.mailbox) })
	stop()
	r.checkArrived(t, r.ids)
	if got := r.health.Counter(health.CounterMessages); got != 50 {
		t.Errorf("messages counter %d, want 50", got)
	}
	// LoseAckEvery leaves stored messages on the server: they come back and
	// must be acknowledged without being stored again.
	if r.health.Counter(health.CounterDuplicates) == 0 {
		t.Error("no duplicates counted: the lost-ack path was not exercised")
	}
	if r.health.Counter(health.CounterExceptions) == 0 || r.health.Counter(health.CounterTransportErrors) == 0 {
		t.Errorf("exceptions %d, transport errors %d: the faults did not fire",
			r.health.Counter(health.CounterExceptions), r.health.Counter(health.CounterTransportErrors))
	}
	if r.health.Counter(health.CounterPolls) == 0 {
		t.Error("no polls counted")
	}
	if st := r.reg.Stalled(time.Minute); len(st) != 0 {
		t.Errorf("stalled loops %v", st)
	}
}

func TestSourceRequestShapes(t *testing.T) {
	r := newSourceRig(t, 1, nil, func(c *SourceConfig) { c.Frequency = units.Duration(90 * time.Second) })
	var mu sync.Mutex
	var bodies []string
	srv := wstest.StartTLS(t, r.pki, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(b))
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		r.ref.ServeHTTP(w, req)
	}), nil)
	r.src.start.Host = srv.Listener.Addr().String()
	r.src.frequency = 90 * time.Second
	stop := r.run(t)
	waitFor(t, "the message", func() bool { return len(r.intake.Stored()) == 1 && mailboxEmpty(r.mailbox) })
	stop()
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		`<PING LOGONID="gw-17" PMVERSION="1.4.2.0" FREQUENCY="90 Seconds" REPING="True"></PING>`,
		`<HL7MAILBOX LOGONID="gw-17" PASSWORD="` + testPassword + `" PMVERSION="1.4.2.0" COMPUTERNAME="ward3-gw"></HL7MAILBOX>`,
		`<HL7 ID="ORD00001" LOGONID="gw-17" PASSWORD="` + testPassword + `" PMVERSION="1.4.2.0" COMPUTERNAME="ward3-gw"></HL7>`,
		`<HL7ACK ID="ORD00001" LOGONID="gw-17" PASSWORD="` + testPassword + `" PMVERSION="1.4.2.0" COMPUTERNAME="ward3-gw"></HL7ACK>`,
	}
	if len(bodies) < len(want) {
		t.Fatalf("%d requests, want at least %d", len(bodies), len(want))
	}
	for i, w := range want {
		if bodies[i] != w {
			t.Errorf("request %d:\n got %s\nwant %s", i+1, bodies[i], w)
		}
	}
}

func TestSourceIntakeErrorStopsRound(t *testing.T) {
	r := newSourceRig(t, 5, nil, nil)
	refusedOnce := false
	r.intake.verdict = func(in flow.Inbound, _ int) flow.Code {
		if in.RemoteID == "ORD00002" && !refusedOnce {
			refusedOnce = true
			return flow.RetryLater
		}
		return flow.Accepted
	}
	stop := r.run(t)
	waitFor(t, "an empty mailbox", func() bool { return mailboxEmpty(r.mailbox) })
	stop()
	r.checkArrived(t, r.ids)
	if !refusedOnce {
		t.Fatal("the intake error was never injected")
	}
	// The round stopped at ORD00002: ORD00003 was not fetched before
	// ORD00002 was retried, which checkArrived's order already proves.
	if r.health.Counter(health.CounterExceptions)+r.health.Counter(health.CounterTransportErrors) != 0 {
		t.Error("an intake error was counted as a peer failure")
	}
}

func TestSourceRejectedMessageStaysOnServer(t *testing.T) {
	r := newSourceRig(t, 4, nil, nil)
	r.intake.verdict = func(in flow.Inbound, _ int) flow.Code {
		if in.RemoteID == "ORD00002" {
			return flow.Rejected
		}
		return flow.Accepted
	}
	stop := r.run(t)
	waitFor(t, "the others", func() bool { return len(r.intake.Stored()) == 3 })
	stop()
	r.checkArrived(t, []string{"ORD00001", "ORD00003", "ORD00004"})
	if _, err := os.Stat(filepath.Join(r.mailbox, "ORD00002")); err != nil {
		t.Errorf("the rejected message was acknowledged: %v", err)
	}
	if r.health.Counter(health.CounterRejected) == 0 {
		t.Error("rejected counter is 0")
	}
}

func TestSourceRefusesHandedOutURLs(t *testing.T) {
	pki := wstest.NewPKI(t)
	elsewhere := wstest.StartPlain(t, http.NotFoundHandler())
	other := wstest.StartTLS(t, pki, http.NotFoundHandler(), nil)
	for name, tc := range map[string]struct {
		public  string
		allowed []string
	}{
		"plain http":    {elsewhere.URL + "/hl7", nil},
		"allowed_hosts": {strings.Replace(other.URL, "127.0.0.1", "localhost", 1), []string{"127.0.0.1"}},
	} {
		t.Run(name, func(t *testing.T) {
			r := newSourceRig(t, 3, func(c *refserver.Config) { c.PublicURL = tc.public }, func(c *SourceConfig) { c.AllowedHosts = tc.allowed })
			stop := r.run(t)
			waitFor(t, "refusals", func() bool { return r.health.Counter(health.CounterRefusedURLs) >= 2 })
			stop()
			if elsewhere.Hits()+other.Hits() != 0 {
				t.Errorf("%d requests reached the refused host", elsewhere.Hits()+other.Hits())
			}
			if len(r.intake.Stored()) != 0 || r.health.State() != health.Down {
				t.Errorf("stored %d, state %s", len(r.intake.Stored()), r.health.State())
			}
		})
	}
}

func TestSourceBadPasswordBacksOff(t *testing.T) {
	r := newSourceRig(t, 2, func(c *refserver.Config) { c.Password = "other" }, nil)
	stop := r.run(t)
	waitFor(t, "exceptions", func() bool { return r.health.Counter(health.CounterExceptions) >= 3 })
	stop()
	if len(r.intake.Stored()) != 0 {
		t.Error("messages were taken with a bad password")
	}
	if !strings.Contains(r.logs.String(), "errorcode=3267") {
		t.Error("the EXCEPTION's code is not logged")
	}
	// Every failed round starts again at ping.
	if st := r.ref.Stats(); st.Pings < 3 || st.Mailboxes < 3 {
		t.Errorf("server stats %+v, want repeated ping and mailbox", st)
	}
	if r.src.backoff.Failures() < 3 {
		t.Errorf("back-off recorded %d failures, want it to grow across failed rounds", r.src.backoff.Failures())
	}
}

func TestSourceReusesSessionWithoutReping(t *testing.T) {
	r := newSourceRig(t, 3, nil, func(c *SourceConfig) { c.Reping = false })
	stop := r.run(t)
	waitFor(t, "several polls", func() bool { return r.ref.Stats().Mailboxes >= 5 && mailboxEmpty(r.mailbox) })
	stop()
	if n := r.ref.Stats().Pings; n != 1 {
		t.Errorf("%d pings with reping off, want 1", n)
	}
}

func TestSourceConfigErrors(t *testing.T) {
	pw := wstest.PasswordFile(t, "x")
	base := SourceConfig{Peer: Peer{URL: "http://his.example.org/ping", LogonID: "gw", PasswordFile: pw}}
	if _, err := NewSource("s", base, nil, Options{}); err == nil || !strings.Contains(err.Error(), "intake") {
		t.Errorf("nil intake: %v", err)
	}
	bad := base
	bad.Frequency = units.Duration(1500 * time.Millisecond)
	if _, err := NewSource("s", bad, &memIntake{}, Options{}); err == nil || !strings.Contains(err.Error(), "frequency") {
		t.Errorf("fractional frequency: %v", err)
	}
	if s, err := NewSource("s", base, &memIntake{}, Options{}); err != nil || s.frequency != DefaultFrequency {
		t.Errorf("defaults: %v", err)
	}
	empty := wstest.PasswordFile(t, "")
	noPW := base
	noPW.PasswordFile = empty
	if _, err := NewSource("s", noPW, &memIntake{}, Options{}); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty password file: %v", err)
	}
}
