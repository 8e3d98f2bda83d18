package webservice

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hl7edge/hl7edge/pipeline/logtest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/backoff"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
	"github.com/hl7edge/hl7edge/pipeline/webservice/internal/wstest"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

const (
	testLogon    = "gw-17"
	testPassword = "S3cret-Pa55word-never-logged"
)

// rig is a destination talking HTTPS to a reference server.
type rig struct {
	pki    *wstest.PKI
	ref    *refserver.Server
	srv    *wstest.Server
	store  string
	dest   *Destination
	health *health.Component
	reg    *health.Registry
	logs   *logtest.Buffer
	clock  *fakeClock
	alarms alarmLog
}

// alarmLog records alarms raised through Options.Alarm.
type alarmLog struct {
	mu    sync.Mutex
	kinds []string
}

func (a *alarmLog) raise(kind, _ string) {
	a.mu.Lock()
	a.kinds = append(a.kinds, kind)
	a.mu.Unlock()
}

func (a *alarmLog) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.kinds...)
}

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// newRig starts a reference server with the given config changes and a
// destination pointed at it. Every rig checks at the end that the password
// never reached the logs or health.
func newRig(t testing.TB, modServer func(*refserver.Config), modDest func(*DestinationConfig)) *rig {
	t.Helper()
	r := &rig{pki: wstest.NewPKI(t), store: t.TempDir(), logs: &logtest.Buffer{}, clock: &fakeClock{t: time.Unix(1_700_000_000, 0)}}
	r.ref, r.srv = startRef(t, r.pki, refserver.Config{StoreDir: r.store, MailboxDir: t.TempDir()}, modServer)
	r.reg = health.NewRegistry("ward3-gw", "1.0.0", nil)
	r.health = r.reg.Component(health.Destination, "ehr", "webservice")
	cfg := r.destConfig(t, r.srv.URL+"/hl7/ping")
	if modDest != nil {
		modDest(&cfg)
	}
	r.dest = r.newDest(t, cfg)
	t.Cleanup(func() { r.assertNoSecrets(t) })
	return r
}

// startRef runs a reference server that requires testLogon and
// testPassword, with cfg changed by mod when it is not nil, behind HTTPS
// with pki's server certificate until the test ends.
func startRef(t testing.TB, pki *wstest.PKI, cfg refserver.Config, mod func(*refserver.Config)) (*refserver.Server, *wstest.Server) {
	t.Helper()
	cfg.Logon, cfg.Password = testLogon, testPassword
	if mod != nil {
		mod(&cfg)
	}
	ref, err := refserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ref.Close() })
	return ref, wstest.StartTLS(t, pki, ref, nil)
}

// testPeer reaches url as testLogon with testPassword, trusting pki's CA.
func testPeer(t testing.TB, pki *wstest.PKI, url string) Peer {
	return Peer{
		URL:          url,
		LogonID:      testLogon,
		PasswordFile: wstest.PasswordFile(t, testPassword),
		CAFile:       pki.CAFile,
		Timeout:      units.Duration(5 * time.Second),
	}
}

func (r *rig) destConfig(t testing.TB, url string) DestinationConfig {
	return DestinationConfig{Peer: testPeer(t, r.pki, url)}
}

func (r *rig) newDest(t testing.TB, cfg DestinationConfig) *Destination {
	t.Helper()
	d, err := NewDestination("ehr", cfg, Options{
		Log:       slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Health:    r.health,
		DeviceID:  "ward3-gw",
		PMVersion: "v1.4.2",
		Now:       r.clock.now,
		Alarm:     r.alarms.raise,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func (r *rig) assertNoSecrets(t testing.TB) {
	t.Helper()
	logs := r.logs.String()
	if strings.Contains(logs, testPassword) {
		t.Errorf("the password appears in the log output")
	}
	if strings.Contains(logs, "TVNI") || strings.Contains(logs, "NOT\xe9REAL") {
		t.Errorf("message content appears in the log output")
	}
	snap := r.reg.Snapshot()
	c, _ := snap.Component(health.Destination, "ehr")
	if strings.Contains(c.LastError, testPassword) {
		t.Errorf("the password appears in health's last error: %q", c.LastError)
	}
}

// testMessage is obviously fake HL7 with a Latin-1 byte, to prove bytes
// travel as they were received.
func testMessage(i int) *flow.Message {
	raw := fmt.Sprintf("MSH|^~\\&|LAB|WARD3|EHR|HOSP|20250101120000||ORU^R01^ORU_R01|CTRL%05d|P|2.5.1\r"+
		"PID|1||TEST%05d^^^HL7EDGE||TEST^NOT\xe9REAL\r"+
		"OBX|1|NM|GLU^Glucose||%d|mg/dL\r", i, i, 80+i%40)
	return &flow.Message{Seq: uint64(i), GUID: uuid.NewString(), Source: "monitors", Received: time.Now(), Raw: []byte(raw)}
}

// deliverAll delivers each message in order, retrying like the deliver
// worker (with a fast back-off) until it is acknowledged.
func deliverAll(t *testing.T, d *Destination, msgs []*flow.Message) (failures int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := &backoff.Backoff{Min: time.Millisecond, Max: 10 * time.Millisecond}
	for _, m := range msgs {
		for {
			err := d.Deliver(ctx, m)
			if err == nil {
				b.Reset()
				break
			}
			failures++
			m.Attempts++
			if m.Attempts > 20 {
				t.Fatalf("message %d: still failing after %d attempts: %v", m.Seq, m.Attempts, err)
			}
			if err := b.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	return failures
}
