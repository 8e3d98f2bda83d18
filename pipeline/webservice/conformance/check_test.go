package conformance

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/webservice/internal/wstest"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

const (
	logon = "gw-17"
	pass  = "secret-pw"
)

func refServer(t *testing.T, pki *wstest.PKI, mod func(*refserver.Config)) (*refserver.Server, string) {
	t.Helper()
	cfg := refserver.Config{StoreDir: t.TempDir(), Logon: logon, Password: pass}
	if mod != nil {
		mod(&cfg)
	}
	s, err := refserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, cfg.StoreDir
}

func config(pki *wstest.PKI, url string) Config {
	// The test CA's certificates live for a day.
	return Config{URL: url, LogonID: logon, Password: pass, CAFile: pki.CAFile, Timeout: 5 * time.Second, ExpiryWarning: time.Hour}
}

func want(t *testing.T, r Report, check string, res Result, detail string) {
	t.Helper()
	it, ok := r.Find(check)
	if !ok {
		t.Errorf("no %q in the report:\n%s", check, r)
		return
	}
	if it.Result != res || !strings.Contains(it.Detail, detail) {
		t.Errorf("%q = %s %q, want %s containing %q\n%s", check, it.Result, it.Detail, res, detail, r)
	}
}

func TestReferenceServerConforms(t *testing.T) {
	pki := wstest.NewPKI(t)
	ref, store := refServer(t, pki, nil)
	srv := wstest.StartTLS(t, pki, ref, nil)
	cfg := config(pki, srv.URL+"/hl7")
	cfg.AllowedHosts = []string{"127.0.0.1"}
	r := Check(context.Background(), cfg)
	if !r.OK() || r.Count(Warn) != 0 || r.Count(Skip) != 0 {
		t.Fatalf("the reference server does not conform cleanly:\n%s", r)
	}
	for _, c := range []string{"ping URL uses https", "ping answered", "TLS", "ping reply format", "ping reply shape", "post URL acceptable",
		"ping with a bad password refused", "test post acknowledged", "repeated GUID acknowledged", "connection reused", "post with a bad password refused"} {
		want(t, r, c, Pass, "")
	}
	want(t, r, "ping with a bad password refused", Pass, "3267")
	// The test message was posted twice under one GUID and stored once, and
	// it is unmistakably a test.
	rec, err := refserver.ReadReceived(store)
	if err != nil || len(rec) != 2 || rec[0].GUID != rec[1].GUID || !rec[1].Duplicate {
		t.Fatalf("received.log %+v, %v", rec, err)
	}
	raw, _ := os.ReadFile(filepath.Join(store, rec[0].GUID+".hl7"))
	if msh := wire.ReadMSH(raw); msh.ProcessingID != "T" || !bytes.Contains(raw, []byte("NOT A PATIENT")) {
		t.Errorf("the test message is not obviously a test: %q", raw)
	}
	if !strings.Contains(r.String(), "11 passed, 0 failed, 0 warnings, 0 skipped") {
		t.Errorf("summary line:\n%s", r)
	}
}

func TestOpenServerFailsBadPasswordChecks(t *testing.T) {
	pki := wstest.NewPKI(t)
	ref, _ := refServer(t, pki, func(c *refserver.Config) { c.Logon = "" })
	srv := wstest.StartTLS(t, pki, ref, nil)
	r := Check(context.Background(), config(pki, srv.URL))
	want(t, r, "ping with a bad password refused", Fail, "accepts a wrong password")
	want(t, r, "post with a bad password refused", Fail, "accepts a wrong password")
	if r.OK() {
		t.Error("report OK despite failures")
	}
}

func TestWrongPasswordReportsException(t *testing.T) {
	pki := wstest.NewPKI(t)
	ref, _ := refServer(t, pki, nil)
	srv := wstest.StartTLS(t, pki, ref, nil)
	cfg := config(pki, srv.URL)
	cfg.Password = ""
	cfg.PasswordFile = wstest.PasswordFile(t, "wrong")
	cfg.ExpiryWarning = 0 // the default 30 days catches the test CA's one-day certificates
	r := Check(context.Background(), cfg)
	want(t, r, "TLS", Warn, "expires within 720h")
	want(t, r, "ping reply shape", Fail, "3267")
	want(t, r, "test post acknowledged", Skip, "")
}

// A misbehaving service: replies with a declaration and the wrong content
// type, hands out a plain-http post URL.
func TestInsecurePostURLIsNeverUsed(t *testing.T) {
	pki := wstest.NewPKI(t)
	plain := wstest.StartPlain(t, http.NotFoundHandler())
	srv := wstest.StartTLS(t, pki, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "\xEF\xBB\xBF<?xml version=\"1.0\"?><PING HL7POSTURL=\""+plain.URL+"/post\" REPING=\"maybe\"/>")
	}), nil)
	r := Check(context.Background(), config(pki, srv.URL))
	want(t, r, "ping reply format", Warn, "text/html")
	want(t, r, "ping reply format", Warn, "XML declaration")
	want(t, r, "ping reply shape", Warn, "REPING")
	want(t, r, "post URL acceptable", Fail, "http")
	want(t, r, "test post acknowledged", Skip, "")
	if plain.Hits() != 0 {
		t.Errorf("%d requests went to the plain-http post URL", plain.Hits())
	}
}

func TestWrongAckAndNoDedupe(t *testing.T) {
	pki := wstest.NewPKI(t)
	ref, _ := refServer(t, pki, func(c *refserver.Config) { c.Faults.WrongAckEvery = 1 })
	srv := wstest.StartTLS(t, pki, ref, nil)
	r := Check(context.Background(), config(pki, srv.URL))
	want(t, r, "test post acknowledged", Fail, "want the posted GUID")
	want(t, r, "repeated GUID acknowledged", Skip, "")

	posts := 0
	dedupeless := wstest.StartTLS(t, pki, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		e, _ := wire.Parse(body)
		if e != nil && e.Name == "HL7" {
			posts++
			if posts == 2 {
				io.WriteString(w, `<EXCEPTION METHOD="PostHL7" ERRORCODE="17" ERRORMESSAGE="Duplicate ID"/>`)
				return
			}
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		ref.SetFaults(refserver.Faults{})
		ref.ServeHTTP(w, req)
	}), nil)
	r = Check(context.Background(), config(pki, dedupeless.URL))
	want(t, r, "test post acknowledged", Pass, "")
	want(t, r, "repeated GUID acknowledged", Fail, "Duplicate ID")
}

func TestUnreachableAndBadConfig(t *testing.T) {
	pki := wstest.NewPKI(t)
	srv := wstest.StartTLS(t, pki, http.NotFoundHandler(), nil)
	r := Check(context.Background(), config(pki, srv.URL))
	want(t, r, "ping answered", Fail, "HTTP 404")
	r = Check(context.Background(), Config{URL: "ftp://x/"})
	want(t, r, "ping URL uses https", Fail, "ftp")
	r = Check(context.Background(), Config{URL: "nope"})
	want(t, r, "configuration", Fail, "absolute URL")
	other := wstest.NewPKI(t)
	r = Check(context.Background(), config(other, srv.URL))
	want(t, r, "ping answered", Fail, "certificate")
}
