package refserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

const (
	logon = "gw-17"
	pass  = "secret-pw"
	msg   = "MSH|^~\\&|LAB|WARD3|EHR|HOSP|20250101||ORU^R01|CTRL1|P|2.5.1\rPID|1||TEST1\r"
)

func newServer(t *testing.T, mod func(*Config)) (*Server, Config) {
	t.Helper()
	cfg := Config{StoreDir: t.TempDir(), MailboxDir: t.TempDir(), Logon: logon, Password: pass}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, cfg
}

// do sends one request body through the handler as an HTTPS request would
// arrive, and returns the status and body.
func do(t *testing.T, h http.Handler, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "https://gw.example.org:8443/hl7", strings.NewReader(body))
	req.TLS = &tls.ConnectionState{}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code == http.StatusOK && rec.Header().Get("Content-Type") != wire.ContentType {
		t.Errorf("Content-Type %q", rec.Header().Get("Content-Type"))
	}
	return rec.Code, rec.Body.String()
}

func post(guid string, raw string) string {
	b, _ := wire.Encode(&wire.HL7{ID: guid, LogonID: logon, Password: pass, MSH: wire.ReadMSH([]byte(raw)), Message: wire.Message{ID: guid, Data: wire.EncodeMessage([]byte(raw))}})
	return string(b)
}

func exceptionOf(t *testing.T, body string) *wire.Exception {
	t.Helper()
	var x *wire.Exception
	if err := wire.DecodeReply([]byte(body), &wire.Ack{}); !errors.As(err, &x) {
		t.Fatalf("reply %s is not an EXCEPTION", body)
	}
	return x
}

func TestPing(t *testing.T) {
	s, _ := newServer(t, nil)
	code, body := do(t, s, `<PING LOGONID="gw-17" PASSWORD="secret-pw" PMVERSION="1.0.0.0" COMPUTERNAME="gw"></PING>`)
	want := `<PING HL7POSTURL="https://gw.example.org:8443/hl7?Action=PostHL7" LOGONID="gw-17" REPING="False"></PING>`
	if code != 200 || body != want {
		t.Errorf("destination ping: %d %s\nwant %s", code, body, want)
	}
	_, body = do(t, s, `<ping logonid="gw-17" pmversion="1.0.0.0" frequency="20 Seconds" reping="True"/>`)
	want = `<PING MAILBOXURL="https://gw.example.org:8443/hl7?Action=HL7Mailbox" HL7GETURL="https://gw.example.org:8443/hl7?Action=GetHL7" HL7ACKURL="https://gw.example.org:8443/hl7?Action=HL7Ack" LOGON="gw-17"></PING>`
	if body != want {
		t.Errorf("data-source ping: %s\nwant %s", body, want)
	}
	pub, _ := newServer(t, func(c *Config) { c.PublicURL = "https://lb.example.org/in?tenant=3" })
	_, body = do(t, pub, `<PING LOGONID="gw-17" PASSWORD="secret-pw"/>`)
	if !strings.Contains(body, `HL7POSTURL="https://lb.example.org/in?Action=PostHL7&amp;tenant=3"`) {
		t.Errorf("PublicURL not used: %s", body)
	}
}

func TestCredentials(t *testing.T) {
	s, _ := newServer(t, nil)
	for _, body := range []string{
		`<PING LOGONID="gw-17" PASSWORD="wrong"/>`,
		`<PING LOGONID="other" FREQUENCY="20 Seconds"/>`,
		`<HL7 ID="g1" LOGONID="gw-17" PASSWORD="wrong"><MESSAGE ID="g1">TVNI</MESSAGE></HL7>`,
		`<HL7MAILBOX LOGONID="gw-17" PASSWORD="wrong"/>`,
		`<HL7 ID="a" LOGONID="gw-17"/>`,
		`<HL7ACK ID="a" LOGONID="gw-17" PASSWORD=""/>`,
	} {
		code, reply := do(t, s, body)
		if x := exceptionOf(t, reply); code != 200 || x.ErrorCode != CodeInvalidLogon || x.ErrorMessage != "Invalid logon id" {
			t.Errorf("%s -> %d %s, want EXCEPTION 3267", body, code, reply)
		}
	}
	if s.Stats().Stored != 0 {
		t.Error("stored a post with a wrong password")
	}
	open, _ := newServer(t, func(c *Config) { c.Logon, c.Password = "", "" })
	if _, body := do(t, open, `<PING LOGONID="anyone" PASSWORD="x"/>`); !strings.Contains(body, "HL7POSTURL") {
		t.Errorf("a server without Logon refused: %s", body)
	}
}

func TestPostStoresOnceAndLogs(t *testing.T) {
	s, cfg := newServer(t, nil)
	for i := range 2 {
		code, body := do(t, s, post("6f1c7a52-3b0e-4c1e-9d59-2f3c1d7e8a90", msg))
		if code != 200 || body != `<ACK MESSAGEID="6f1c7a52-3b0e-4c1e-9d59-2f3c1d7e8a90"></ACK>` {
			t.Fatalf("post %d: %d %s", i, code, body)
		}
	}
	do(t, s, post("g2", msg))
	got, err := os.ReadFile(filepath.Join(cfg.StoreDir, "6f1c7a52-3b0e-4c1e-9d59-2f3c1d7e8a90.hl7"))
	if err != nil || string(got) != msg {
		t.Fatalf("stored %q, %v", got, err)
	}
	rec, err := ReadReceived(cfg.StoreDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec) != 3 || rec[0].Duplicate || !rec[1].Duplicate || rec[2].GUID != "g2" || rec[0].ControlID != "CTRL1" {
		t.Errorf("received.log %+v", rec)
	}
	entries, _ := os.ReadDir(cfg.StoreDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
	if st := s.Stats(); st.Stored != 2 || st.Duplicates != 1 || st.Posts != 3 {
		t.Errorf("stats %+v", st)
	}
	// A restarted server still knows the GUID from the file.
	s.Close()
	again, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	do(t, again, post("g2", msg))
	if again.Stats().Duplicates != 1 {
		t.Error("a restarted server stored a known GUID again")
	}
}

func TestBadRequests(t *testing.T) {
	s, cfg := newServer(t, nil)
	tests := []struct {
		name, body string
		code       int
		errorCode  string
	}{
		{"not XML", "hello", 400, ""},
		{"unknown root", `<FOO/>`, 200, "2"},
		{"path in ID", post("../evil", msg), 200, "4"},
		{"empty ID", post("", msg), 200, "4"},
		{"MESSAGE ID differs", `<HL7 ID="a" LOGONID="gw-17" PASSWORD="secret-pw"><MESSAGE ID="b">TVNI</MESSAGE></HL7>`, 200, "5"},
		{"not Base64", `<HL7 ID="a" LOGONID="gw-17" PASSWORD="secret-pw"><MESSAGE ID="a">!!!</MESSAGE></HL7>`, 200, "6"},
		{"empty MESSAGE", `<HL7 ID="a" LOGONID="gw-17" PASSWORD="secret-pw"><MESSAGE ID="a"></MESSAGE></HL7>`, 200, "6"},
		{"get unknown", `<HL7 ID="nope" LOGONID="gw-17" PASSWORD="secret-pw"/>`, 200, "7"},
		{"get path", `<HL7 ID="../x" LOGONID="gw-17" PASSWORD="secret-pw"/>`, 200, "7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(t, s, tt.body)
			if code != tt.code {
				t.Fatalf("status %d, want %d (%s)", code, tt.code, body)
			}
			if tt.errorCode != "" {
				if x := exceptionOf(t, body); x.ErrorCode != tt.errorCode {
					t.Errorf("ERRORCODE %s, want %s", x.ErrorCode, tt.errorCode)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(cfg.StoreDir), "evil.hl7")); err == nil {
		t.Error("a post escaped the store directory")
	}
	req := httptest.NewRequest(http.MethodGet, "/hl7", nil)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET -> %d", rec.Code)
	}
	small, _ := newServer(t, func(c *Config) { c.MaxBodyBytes = 10 })
	if code, _ := do(t, small, post("a", msg)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body -> %d", code)
	}
}

func TestMailboxGetAck(t *testing.T) {
	s, cfg := newServer(t, nil)
	for name, body := range map[string]string{"B2": msg, "A1": msg + "OBX|1\r", ".hidden": msg, "C3.tmp": msg} {
		os.WriteFile(filepath.Join(cfg.MailboxDir, name), []byte(body), 0o600)
	}
	os.Mkdir(filepath.Join(cfg.MailboxDir, "D4"), 0o700)
	_, body := do(t, s, `<HL7MAILBOX LOGONID="gw-17" PASSWORD="secret-pw"/>`)
	if body != `<HL7MAILBOX COUNT="2"><HL7 ID="A1"></HL7><HL7 ID="B2"></HL7></HL7MAILBOX>` {
		t.Fatalf("mailbox: %s", body)
	}
	_, body = do(t, s, `<hl7 id="A1" logonid="gw-17" password="secret-pw"/>`)
	var h wire.HL7
	if err := wire.DecodeReply([]byte(body), &h); err != nil {
		t.Fatal(err)
	}
	raw, _ := wire.DecodeMessage(h.Message.Data)
	if h.ID != "A1" || h.Message.ID != "A1" || string(raw) != msg+"OBX|1\r" || h.ControlID != "CTRL1" || h.LogonID != "" {
		t.Errorf("get reply %+v", h)
	}
	for range 2 { // acknowledging twice is fine: the first reply may have been lost
		_, body = do(t, s, `<HL7ACK ID="A1" LOGONID="gw-17" PASSWORD="secret-pw"/>`)
		if x := exceptionOf(t, body); !x.Empty() || body != `<EXCEPTION></EXCEPTION>` {
			t.Errorf("ack reply %s, want an empty EXCEPTION", body)
		}
	}
	_, body = do(t, s, `<HL7MAILBOX LOGONID="gw-17" PASSWORD="secret-pw"/>`)
	if body != `<HL7MAILBOX COUNT="1"><HL7 ID="B2"></HL7></HL7MAILBOX>` {
		t.Errorf("mailbox after ack: %s", body)
	}
	none, _ := newServer(t, func(c *Config) { c.MailboxDir = "" })
	if _, body := do(t, none, `<PING LOGONID="gw-17" FREQUENCY="20 Seconds"/>`); exceptionOf(t, body).Empty() {
		t.Error("a server without mailbox handed out mailbox URLs")
	}
}

func TestFaultsFireEveryNth(t *testing.T) {
	s, cfg := newServer(t, func(c *Config) { c.Faults = Faults{ExceptionEvery: 3, Status500Every: 4} })
	var got []string
	for range 8 {
		code, body := do(t, s, `<PING LOGONID="gw-17" PASSWORD="secret-pw"/>`)
		switch {
		case code == 500:
			got = append(got, "500")
		case strings.HasPrefix(body, "<EXCEPTION"):
			got = append(got, "X")
		default:
			got = append(got, "ok")
		}
	}
	if want := "ok ok X 500 ok X ok 500"; strings.Join(got, " ") != want {
		t.Errorf("replies %v, want %s", got, want)
	}
	s.SetFaults(Faults{WrongAckEvery: 2, ExceptionOnGetEvery: 2, Status500OnMailboxEvery: 2, LoseAckEvery: 2})
	if _, b := do(t, s, post("w1", msg)); !strings.Contains(b, `"w1"`) {
		t.Errorf("post 1: %s", b)
	}
	if _, b := do(t, s, post("w2", msg)); strings.Contains(b, `"w2"`) || !strings.HasPrefix(b, "<ACK") {
		t.Errorf("post 2 should be ACKed with another GUID: %s", b)
	}
	if _, err := os.Stat(filepath.Join(cfg.StoreDir, "w2.hl7")); err != nil {
		t.Error("a wrongly ACKed post was not stored")
	}
	os.WriteFile(filepath.Join(cfg.MailboxDir, "M1"), []byte(msg), 0o600)
	mb := `<HL7MAILBOX LOGONID="gw-17" PASSWORD="secret-pw"/>`
	if c, _ := do(t, s, mb); c != 200 {
		t.Error("mailbox 1 failed")
	}
	if c, _ := do(t, s, mb); c != 500 {
		t.Error("mailbox 2 did not fail")
	}
	get := `<HL7 ID="M1" LOGONID="gw-17" PASSWORD="secret-pw"/>`
	if _, b := do(t, s, get); strings.HasPrefix(b, "<EXCEPTION") {
		t.Error("get 1 failed")
	}
	if _, b := do(t, s, get); exceptionOf(t, b).ErrorCode != "9998" {
		t.Error("get 2 did not fail")
	}
	ack := `<HL7ACK ID="M1" LOGONID="gw-17" PASSWORD="secret-pw"/>`
	do(t, s, ack) // 1: processed
	os.WriteFile(filepath.Join(cfg.MailboxDir, "M1"), []byte(msg), 0o600)
	if c, _ := do(t, s, ack); c != 500 {
		t.Error("ack 2 was not lost")
	}
	if _, err := os.Stat(filepath.Join(cfg.MailboxDir, "M1")); err != nil {
		t.Error("a lost ack was processed")
	}
	s.SetFaults(Faults{DropAckEvery: 1})
	if c, _ := do(t, s, ack); c != 500 {
		t.Error("a dropped ack reply was delivered")
	}
	if _, err := os.Stat(filepath.Join(cfg.MailboxDir, "M1")); err == nil {
		t.Error("a dropped ack reply's ack was not processed")
	}
}

// Faults can be changed while requests run.
func TestSetFaultsConcurrently(t *testing.T) {
	s, _ := newServer(t, nil)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				if i == 0 {
					s.SetFaults(Faults{ExceptionEvery: j%3 + 1})
					continue
				}
				do(t, s, `<PING LOGONID="gw-17" PASSWORD="secret-pw"/>`)
			}
		}()
	}
	wg.Wait()
	if st := s.Stats(); st.Requests != 150 || st.Faults == 0 {
		t.Errorf("stats %+v", st)
	}
}

// Over real HTTPS, a dropped ack reply alternates a 500 and a closed
// connection, and a delay holds the reply back.
func TestDroppedReplyAndDelayOverHTTPS(t *testing.T) {
	ca, _ := throwawayca.NewCA("t")
	leaf, _ := ca.Issue("s", "127.0.0.1")
	s, cfg := newServer(t, func(c *Config) { c.Faults = Faults{DropAckEvery: 1} })
	hs := httptest.NewUnstartedServer(s)
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, MinVersion: tls.VersionTLS12}
	hs.StartTLS()
	defer hs.Close()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}}
	send := func(body string) (int, error) {
		resp, err := client.Post(hs.URL, wire.ContentType, strings.NewReader(body))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	os.WriteFile(filepath.Join(cfg.MailboxDir, "M1"), []byte(msg), 0o600)
	ack := `<HL7ACK ID="M1" LOGONID="gw-17" PASSWORD="secret-pw"/>`
	if code, err := send(ack); err != nil || code != 500 {
		t.Errorf("first dropped reply: %d %v, want 500", code, err)
	}
	if _, err := send(ack); err == nil {
		t.Errorf("second dropped reply arrived; want a closed connection")
	}
	s.SetFaults(Faults{Delay: 150 * time.Millisecond})
	start := time.Now()
	if code, err := send(`<PING LOGONID="gw-17" PASSWORD="secret-pw"/>`); err != nil || code != 200 {
		t.Fatalf("ping: %d %v", code, err)
	}
	if time.Since(start) < 150*time.Millisecond {
		t.Error("the delay did not hold the reply")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "StoreDir") {
		t.Errorf("empty StoreDir: %v", err)
	}
	if _, err := New(Config{StoreDir: t.TempDir(), PublicURL: "/relative"}); err == nil || !strings.Contains(err.Error(), "PublicURL") {
		t.Errorf("relative PublicURL: %v", err)
	}
}

// TestConcurrentPostsStoreEachGUIDOnce: posts of different GUIDs store in
// parallel, and concurrent posts of one GUID store it once; the others are
// duplicates, logged after the first arrival.
func TestConcurrentPostsStoreEachGUIDOnce(t *testing.T) {
	s, cfg := newServer(t, nil)
	var wg sync.WaitGroup
	for i := range 40 {
		guid := fmt.Sprintf("G-%d", i%4)
		wg.Go(func() {
			if code, body := do(t, s, post(guid, msg)); code != http.StatusOK || !strings.Contains(body, guid) {
				t.Errorf("post %s: %d %s", guid, code, body)
			}
		})
	}
	wg.Wait()
	if st := s.Stats(); st.Stored != 4 || st.Duplicates != 36 {
		t.Fatalf("stored %d, duplicates %d; want 4 and 36", st.Stored, st.Duplicates)
	}
	recs, err := ReadReceived(cfg.StoreDir)
	if err != nil {
		t.Fatal(err)
	}
	first := map[string]bool{}
	for _, r := range recs {
		if r.Duplicate != first[r.GUID] {
			t.Fatalf("received.log: %s duplicate=%v, but first arrival seen=%v", r.GUID, r.Duplicate, first[r.GUID])
		}
		first[r.GUID] = true
	}
}
