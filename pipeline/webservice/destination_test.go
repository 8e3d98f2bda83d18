package webservice

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
	"github.com/hl7edge/hl7edge/pipeline/webservice/internal/wstest"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

func messages(n int) []*flow.Message {
	out := make([]*flow.Message, n)
	for i := range out {
		out[i] = testMessage(i + 1)
	}
	return out
}

// checkStored proves every message reached the server exactly once as a new
// GUID, in spool order, byte for byte.
func checkStored(t *testing.T, store string, msgs []*flow.Message) []refserver.Received {
	t.Helper()
	rec, err := refserver.ReadReceived(store)
	if err != nil {
		t.Fatal(err)
	}
	var firsts []refserver.Received
	seen := map[string]bool{}
	for _, r := range rec {
		if r.Duplicate != seen[r.GUID] {
			t.Errorf("GUID %s: duplicate=%v but seen before=%v", r.GUID, r.Duplicate, seen[r.GUID])
		}
		if !seen[r.GUID] {
			firsts = append(firsts, r)
			seen[r.GUID] = true
		}
	}
	if len(firsts) != len(msgs) {
		t.Fatalf("server stored %d distinct GUIDs, want %d", len(firsts), len(msgs))
	}
	for i, m := range msgs {
		if firsts[i].GUID != m.GUID {
			t.Fatalf("stored #%d is %s, want %s (spool order broken)", i, firsts[i].GUID, m.GUID)
		}
		if want := wire.ReadMSH(m.Raw).ControlID; firsts[i].ControlID != want {
			t.Errorf("stored #%d control ID %q, want %q", i, firsts[i].ControlID, want)
		}
		got, err := os.ReadFile(filepath.Join(store, m.GUID+".hl7"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, m.Raw) {
			t.Fatalf("stored #%d differs from what was spooled", i)
		}
	}
	return rec
}

func TestDeliverHundredInOrderOnOneConnection(t *testing.T) {
	r := newRig(t, nil, nil)
	msgs := messages(100)
	if failures := deliverAll(t, r.dest, msgs); failures != 0 {
		t.Fatalf("%d failures on a healthy server", failures)
	}
	rec := checkStored(t, r.store, msgs)
	if len(rec) != 100 {
		t.Errorf("received.log has %d lines, want 100 (no retries happened)", len(rec))
	}
	if n := r.srv.Conns(); n != 1 {
		t.Errorf("%d TCP connections for 1 ping and 100 posts, want 1 (keep-alive)", n)
	}
	st := r.ref.Stats()
	if st.Pings != 1 || st.Posts != 100 || st.Stored != 100 || st.Duplicates != 0 {
		t.Errorf("server stats %+v, want 1 ping, 100 posts stored", st)
	}
	for c, want := range map[string]uint64{health.CounterPings: 1, health.CounterPosts: 100, health.CounterAcked: 100, health.CounterExceptions: 0, health.CounterTransportErrors: 0} {
		if got := r.health.Counter(c); got != want {
			t.Errorf("health counter %s = %d, want %d", c, got, want)
		}
	}
	if r.health.State() != health.Up {
		t.Errorf("health state %s, want up", r.health.State())
	}
}

func TestDeliverUnderFaultsStaysExactlyOnceInOrder(t *testing.T) {
	r := newRig(t, func(c *refserver.Config) {
		c.Faults = refserver.Faults{ExceptionEvery: 13, Status500Every: 11, WrongAckEvery: 7}
	}, nil)
	msgs := messages(60)
	failures := deliverAll(t, r.dest, msgs)
	if failures == 0 {
		t.Fatal("no failures: the faults did not fire")
	}
	rec := checkStored(t, r.store, msgs)
	dups := 0
	for _, x := range rec {
		if x.Duplicate {
			dups++
		}
	}
	// Each wrong ACK stores the message, so its retry is a duplicate the
	// server discards by GUID.
	if dups == 0 {
		t.Error("no duplicates: wrong ACKs were not retried with the same GUID")
	}
	if got := r.health.Counter(health.CounterExceptions) + r.health.Counter(health.CounterTransportErrors); got != uint64(failures) {
		t.Errorf("health counted %d failures, the worker saw %d", got, failures)
	}
}

func TestPostWireShape(t *testing.T) {
	r := newRig(t, nil, nil)
	m := testMessage(42)
	if err := r.dest.Deliver(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	body := string(r.srv.LastBody())
	want := `<HL7 ID="` + m.GUID + `" LOGONID="gw-17" PASSWORD="` + testPassword + `" SA="LAB" SF="WARD3" RA="EHR" RF="HOSP" MTYPE="ORU" MEVENT="R01" MCONTROLID="CTRL00042" MTESTPROD="P" MVERSION="2.5.1" PMVERSION="1.4.2.0" COMPUTERNAME="ward3-gw"><MESSAGE ID="` + m.GUID + `">` + wire.EncodeMessage(m.Raw) + `</MESSAGE></HL7>`
	if body != want {
		t.Errorf("post body:\n got %s\nwant %s", body, want)
	}
}

func TestExceptionOnPing(t *testing.T) {
	r := newRig(t, func(c *refserver.Config) { c.Password = "another" }, nil)
	err := r.dest.Deliver(context.Background(), testMessage(1))
	var exc *wire.Exception
	if !errors.As(err, &exc) || exc.ErrorCode != refserver.CodeInvalidLogon || exc.Method != "PingAcknowledgement" {
		t.Fatalf("Deliver = %v, want EXCEPTION %s", err, refserver.CodeInvalidLogon)
	}
	if st := r.ref.Stats(); st.Posts != 0 {
		t.Errorf("%d posts after a ping EXCEPTION, want 0", st.Posts)
	}
	if r.health.State() != health.Down || r.health.Counter(health.CounterExceptions) != 1 {
		t.Errorf("health %s with %d exceptions, want down with 1", r.health.State(), r.health.Counter(health.CounterExceptions))
	}
	logs := r.logs.String()
	for _, want := range []string{"method=PingAcknowledgement", "errorcode=3267", `errormessage="Invalid logon id"`, "additional=StreamRequest", "guid=", "control_id=CTRL00001"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s:\n%s", want, logs)
		}
	}
}

func TestExceptionOnPostResetsSession(t *testing.T) {
	// Request 1 is the ping, request 2 the post.
	r := newRig(t, func(c *refserver.Config) { c.Faults.ExceptionEvery = 2 }, nil)
	err := r.dest.Deliver(context.Background(), testMessage(1))
	var exc *wire.Exception
	if !errors.As(err, &exc) || exc.ErrorCode != "9999" {
		t.Fatalf("Deliver = %v, want the injected EXCEPTION", err)
	}
	r.ref.SetFaults(refserver.Faults{})
	if err := r.dest.Deliver(context.Background(), testMessage(1)); err != nil {
		t.Fatal(err)
	}
	if st := r.ref.Stats(); st.Pings != 2 {
		t.Errorf("%d pings, want 2: an EXCEPTION on post must send the client back to ping", st.Pings)
	}
}

func TestHTTP500IsTransportFailure(t *testing.T) {
	r := newRig(t, func(c *refserver.Config) { c.Faults.Status500Every = 2 }, nil)
	err := r.dest.Deliver(context.Background(), testMessage(1))
	if !errors.Is(err, ErrTransport) || !strings.Contains(err.Error(), "500") {
		t.Fatalf("Deliver = %v, want a transport failure naming HTTP 500", err)
	}
	if r.health.Counter(health.CounterTransportErrors) != 1 || r.health.State() != health.Down {
		t.Errorf("health: %d transport errors, state %s", r.health.Counter(health.CounterTransportErrors), r.health.State())
	}
	r.ref.SetFaults(refserver.Faults{})
	if err := r.dest.Deliver(context.Background(), testMessage(1)); err != nil {
		t.Fatal(err)
	}
	if st := r.ref.Stats(); st.Pings != 2 {
		t.Errorf("%d pings, want 2: a transport failure resets the session", st.Pings)
	}
	if r.health.State() != health.Up {
		t.Errorf("state %s after a delivery, want up", r.health.State())
	}
}

func TestSlowReplyTimesOut(t *testing.T) {
	r := newRig(t, nil, func(c *DestinationConfig) { c.Timeout = units.Duration(300 * time.Millisecond) })
	if err := r.dest.Deliver(context.Background(), testMessage(1)); err != nil {
		t.Fatal(err)
	}
	r.ref.SetFaults(refserver.Faults{Delay: 10 * time.Second})
	start := time.Now()
	err := r.dest.Deliver(context.Background(), testMessage(2))
	if !errors.Is(err, ErrTransport) || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("Deliver = %v, want a transport failure naming the timeout", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Deliver returned after %s; the 300ms timeout did not bound it", el)
	}
}

func TestAckForAnotherGUID(t *testing.T) {
	r := newRig(t, func(c *refserver.Config) { c.Faults.WrongAckEvery = 1 }, nil)
	m := testMessage(1)
	err := r.dest.Deliver(context.Background(), m)
	if !errors.Is(err, ErrTransport) || !strings.Contains(err.Error(), m.GUID) {
		t.Fatalf("Deliver = %v, want a transport failure naming the GUID", err)
	}
	r.ref.SetFaults(refserver.Faults{})
	if err := r.dest.Deliver(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	rec, _ := refserver.ReadReceived(r.store)
	if len(rec) != 2 || rec[0].Duplicate || !rec[1].Duplicate || rec[1].GUID != m.GUID {
		t.Errorf("received.log %+v: want the retry recorded as a duplicate of the same GUID", rec)
	}
}

// A ping server must not be able to send patient data anywhere: URLs that
// break the profile's rules are refused and nothing reaches their host.
func TestRefusedPostURLs(t *testing.T) {
	pki := wstest.NewPKI(t)
	counting := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`<ACK MESSAGEID="x"/>`)) })
	tests := []struct {
		name    string
		target  func(t *testing.T) (*wstest.Server, string)
		allowed []string
	}{
		{"plain http", func(t *testing.T) (*wstest.Server, string) {
			s := wstest.StartPlain(t, counting)
			return s, s.URL + "/hl7"
		}, nil},
		{"host outside allowed_hosts", func(t *testing.T) (*wstest.Server, string) {
			s := wstest.StartTLS(t, pki, counting, nil)
			return s, strings.Replace(s.URL, "127.0.0.1", "localhost", 1) + "/hl7"
		}, []string{"127.0.0.1", "*.example.org"}},
		{"port outside allowed_hosts", func(t *testing.T) (*wstest.Server, string) {
			s := wstest.StartTLS(t, pki, counting, nil)
			return s, s.URL + "/hl7"
		}, []string{"127.0.0.1:1"}},
		{"ftp", func(t *testing.T) (*wstest.Server, string) {
			s := wstest.StartPlain(t, counting)
			return s, strings.Replace(s.URL, "http", "ftp", 1)
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			other, target := tt.target(t)
			r := newRig(t, func(c *refserver.Config) { c.PublicURL = target }, func(c *DestinationConfig) { c.AllowedHosts = tt.allowed })
			err := r.dest.Deliver(context.Background(), testMessage(1))
			if !errors.Is(err, ErrRefusedURL) {
				t.Fatalf("Deliver = %v, want ErrRefusedURL", err)
			}
			if n := other.Hits(); n != 0 {
				t.Errorf("%d requests reached the refused host", n)
			}
			if r.health.Counter(health.CounterRefusedURLs) != 1 || r.health.State() != health.Down {
				t.Errorf("refused_urls = %d, state %s", r.health.Counter(health.CounterRefusedURLs), r.health.State())
			}
			if !strings.Contains(r.logs.String(), "refused a URL") {
				t.Errorf("the refusal is not logged")
			}
			if a := r.alarms.list(); len(a) != 1 || a[0] != "url_refused" {
				t.Errorf("alarms %v, want one url_refused", a)
			}
		})
	}
}

// Load balancing: a post URL on another, allowed server is used.
func TestPostURLOnAnotherAllowedServer(t *testing.T) {
	other := newRig(t, nil, nil) // a second reference server as the post target
	r := newRig(t, func(c *refserver.Config) { c.PublicURL = other.srv.URL + "/ingest" }, nil)
	// Trust both servers' CAs: one file holding both certificates.
	both := filepath.Join(t.TempDir(), "both.pem")
	os.WriteFile(both, append(append([]byte{}, r.pki.CA.CertPEM...), other.pki.CA.CertPEM...), 0o600)
	cfg := r.destConfig(t, r.srv.URL+"/hl7/ping")
	cfg.CAFile, cfg.AllowedHosts = both, []string{"127.0.0.*"}
	d := r.newDest(t, cfg)
	if err := d.Deliver(context.Background(), testMessage(7)); err != nil {
		t.Fatal(err)
	}
	if st := other.ref.Stats(); st.Stored != 1 || st.Pings != 0 {
		t.Errorf("post server stats %+v, want the post and no ping", st)
	}
	if st := r.ref.Stats(); st.Pings != 1 || st.Posts != 0 {
		t.Errorf("ping server stats %+v, want the ping and no post", st)
	}
}

func TestInsecureHTTPOnlyWhenAllowed(t *testing.T) {
	store := t.TempDir()
	ref, err := refserver.New(refserver.Config{StoreDir: store, Logon: testLogon, Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	plain := wstest.StartPlain(t, ref)
	r := newRig(t, nil, nil)
	cfg := r.destConfig(t, plain.URL+"/hl7")
	if _, err := NewDestination("ehr", cfg, Options{}); err == nil || !strings.Contains(err.Error(), "allow_insecure_http") {
		t.Fatalf("NewDestination with an http:// ping URL = %v, want a refusal naming allow_insecure_http", err)
	}
	cfg.AllowInsecureHTTP = true
	d := r.newDest(t, cfg)
	if err := d.Deliver(context.Background(), testMessage(1)); err != nil {
		t.Fatal(err)
	}
	if ref.Stats().Stored != 1 {
		t.Error("not stored over plain HTTP on a lab bench")
	}
}

func TestRepingCommandAndSessionLifetime(t *testing.T) {
	r := newRig(t, nil, func(c *DestinationConfig) { c.SessionLifetime = units.Duration(15 * time.Minute) })
	deliverAll(t, r.dest, messages(3))
	if n := r.ref.Stats().Pings; n != 1 {
		t.Fatalf("%d pings for 3 posts, want 1", n)
	}
	r.dest.Reping()
	deliverAll(t, r.dest, messages(2))
	if n := r.ref.Stats().Pings; n != 2 {
		t.Fatalf("%d pings after Reping, want 2", n)
	}
	r.clock.t = r.clock.t.Add(15*time.Minute + time.Second)
	deliverAll(t, r.dest, messages(2))
	if n := r.ref.Stats().Pings; n != 3 {
		t.Fatalf("%d pings after the session lifetime, want 3", n)
	}
}

func TestServerAsksRepingBeforeEveryPost(t *testing.T) {
	r := newRig(t, func(c *refserver.Config) { c.Reping = true }, nil)
	deliverAll(t, r.dest, messages(4))
	if st := r.ref.Stats(); st.Pings != 4 || st.Stored != 4 {
		t.Fatalf("server stats %+v, want 4 pings for 4 posts (REPING=True)", st)
	}
}

// Replies that are not the protocol's are transport failures, and a
// redirect is never followed.
func TestBadRepliesAreTransportFailures(t *testing.T) {
	pki := wstest.NewPKI(t)
	target := wstest.StartTLS(t, pki, http.NotFoundHandler(), nil)
	tests := []struct {
		name string
		h    http.HandlerFunc
		want string
	}{
		{"html", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("<html><body>hi")) }, "not one XML element"},
		{"json", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"ok":true}`)) }, "not one XML element"},
		{"wrong root", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`<ACK MESSAGEID="x"/>`)) }, "want <PING>"},
		{"no post URL", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`<PING LOGONID="gw-17"/>`)) }, "HL7POSTURL"},
		{"relative post URL", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`<PING HL7POSTURL="/post"/>`)) }, "not an absolute URL"},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/elsewhere", http.StatusTemporaryRedirect)
		}, "status 307"},
		{"reset", func(w http.ResponseWriter, _ *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}, "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := wstest.StartTLS(t, pki, tt.h, nil)
			r := newRig(t, nil, nil)
			cfg := r.destConfig(t, srv.URL+"/ping")
			cfg.CAFile = pki.CAFile
			d := r.newDest(t, cfg)
			err := d.Deliver(context.Background(), testMessage(1))
			if !errors.Is(err, ErrTransport) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Deliver = %v, want a transport failure mentioning %q", err, tt.want)
			}
			if r.health.Counter(health.CounterTransportErrors) != 1 {
				t.Errorf("transport_errors = %d", r.health.Counter(health.CounterTransportErrors))
			}
			if n := r.health.Counter(health.CounterTLSErrors); n != 0 {
				t.Errorf("tls_errors = %d for a failure after the handshake, want 0", n)
			}
		})
	}
	if target.Hits() != 0 {
		t.Errorf("the redirect was followed")
	}
}

// A server that echoes the password in an EXCEPTION does not get it into
// the logs, the error or health.
func TestEchoedPasswordIsScrubbed(t *testing.T) {
	pki := wstest.NewPKI(t)
	srv := wstest.StartTLS(t, pki, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`<EXCEPTION METHOD="Ping" ERRORCODE="1" ERRORMESSAGE="password ` + testPassword + ` is wrong" ADDITIONAL="` + testPassword + `"/>`))
	}), nil)
	r := newRig(t, nil, nil)
	cfg := r.destConfig(t, srv.URL)
	cfg.CAFile = pki.CAFile
	d := r.newDest(t, cfg)
	err := d.Deliver(context.Background(), testMessage(1))
	if err == nil || strings.Contains(err.Error(), testPassword) || !strings.Contains(err.Error(), "[redacted]") {
		t.Fatalf("Deliver = %v, want an EXCEPTION with the password redacted", err)
	}
	// newRig's cleanup checks the logs and health.
}

func TestMutualTLS(t *testing.T) {
	r := newRig(t, nil, nil)
	srv := wstest.StartTLS(t, r.pki, r.ref, func(c *tls.Config) {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = r.pki.CA.Pool()
	})
	cfg := r.destConfig(t, srv.URL+"/hl7")
	without := r.newDest(t, cfg)
	if err := without.Deliver(context.Background(), testMessage(1)); !errors.Is(err, ErrTransport) {
		t.Fatalf("Deliver without a client certificate = %v, want a transport failure", err)
	}
	cfg.CertFile, cfg.KeyFile = r.pki.ClientCert, r.pki.ClientKey
	with := r.newDest(t, cfg)
	if err := with.Deliver(context.Background(), testMessage(2)); err != nil {
		t.Fatalf("Deliver with a client certificate: %v", err)
	}
}

func TestUnknownCAIsRefused(t *testing.T) {
	r := newRig(t, nil, nil)
	cfg := r.destConfig(t, r.srv.URL+"/hl7")
	other := wstest.NewPKI(t)
	cfg.CAFile = other.CAFile
	d := r.newDest(t, cfg)
	err := d.Deliver(context.Background(), testMessage(1))
	if !errors.Is(err, ErrTransport) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Deliver = %v, want a certificate verification failure", err)
	}
	if r.srv.Hits() != 0 {
		t.Error("a request went through an unverified connection")
	}
	// The FAULT LED's code 4 (clock or TLS) reads this counter; nothing
	// counted it before, so a certificate failure showed no fault code.
	if n := r.health.Counter(health.CounterTLSErrors); n != 1 {
		t.Errorf("tls_errors = %d after a certificate failure, want 1", n)
	}
	if r.health.State() != health.Down {
		t.Errorf("state %s, want down", r.health.State())
	}
}

// Connections that the server closes are re-established with TLS session
// resumption (one round trip less per reconnect).
func TestTLSSessionResumption(t *testing.T) {
	r := newRig(t, nil, nil)
	closing := wstest.StartTLS(t, r.pki, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Connection", "close")
		r.ref.ServeHTTP(w, req)
	}), nil)
	d := r.newDest(t, r.destConfig(t, closing.URL+"/hl7"))
	deliverAll(t, d, messages(4))
	res := closing.Resumed()
	if closing.Conns() != 5 || len(res) != 5 {
		t.Fatalf("%d connections, %d requests; want 5 of each", closing.Conns(), len(res))
	}
	if res[0] {
		t.Error("the first handshake claims to resume")
	}
	for i, ok := range res[1:] {
		if !ok {
			t.Errorf("connection %d did not resume the TLS session", i+2)
		}
	}
}

func TestCanceledDeliveryIsNotAPeerFailure(t *testing.T) {
	r := newRig(t, func(c *refserver.Config) { c.Faults.Delay = 10 * time.Second }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for r.srv.Hits() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	err := r.dest.Deliver(ctx, testMessage(1))
	if err == nil {
		t.Fatal("Deliver succeeded")
	}
	if r.health.State() == health.Down || r.health.Counter(health.CounterTransportErrors) != 0 {
		t.Errorf("a canceled delivery marked the destination down")
	}
}

func TestCloseDropsConnections(t *testing.T) {
	r := newRig(t, nil, nil)
	deliverAll(t, r.dest, messages(2))
	if err := r.dest.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the server to see the connection closed", func() bool { return r.srv.Closed() == r.srv.Conns() })
}

func TestLogsCarryIDsNotContent(t *testing.T) {
	r := newRig(t, nil, nil)
	m := testMessage(5)
	if err := r.dest.Deliver(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	logs := r.logs.String()
	if !regexp.MustCompile(`guid=` + m.GUID + `.*control_id=CTRL00005`).MatchString(logs) {
		t.Errorf("the delivery log line lacks the GUID and control ID:\n%s", logs)
	}
	if strings.Contains(logs, "TEST00005") {
		t.Error("a patient identifier reached the logs")
	}
}

func TestMessageWithoutGUIDIsPermanent(t *testing.T) {
	r := newRig(t, nil, nil)
	m := testMessage(1)
	m.GUID = ""
	if err := r.dest.Deliver(context.Background(), m); !errors.Is(err, flow.ErrPermanent) {
		t.Fatalf("Deliver = %v, want ErrPermanent", err)
	}
	if r.srv.Hits() != 0 {
		t.Error("a message without GUID was sent")
	}
}

func TestPostAttributes(t *testing.T) {
	full := []byte("MSH|^~\\&|LAB^1^ISO|WARD3|EHR|HOSP|20250101||ORU^R01^ORU_R01|MSG00042|P^T|2.5.1\rPID|1\r")
	want := wire.MSH{SendingApp: "LAB", SendingFacility: "WARD3", ReceivingApp: "EHR", ReceivingFacility: "HOSP",
		MessageType: "ORU", TriggerEvent: "R01", ControlID: "MSG00042", ProcessingID: "P", Version: "2.5.1"}
	if got := postAttributes(full); got != want {
		t.Errorf("parsed: %+v\nwant %+v", got, want)
	}
	// MSH-12 missing: the HL7 parser refuses it, the fallback still reads it.
	partial := []byte("MSH|^~\\&|LAB|WARD3|EHR|HOSP|20250101||ORU^R01|MSG00043\rPID|1\r")
	if got := postAttributes(partial); got.ControlID != "MSG00043" || got.MessageType != "ORU" || got.Version != "" {
		t.Errorf("fallback: %+v", got)
	}
	if got := postAttributes([]byte("garbage")); got != (wire.MSH{}) {
		t.Errorf("garbage: %+v", got)
	}
}
