package wstest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// client makes an HTTPS client that trusts only the PKI's CA, read from
// CAFile the way a destination's ca_file is, and presents cert when given.
func client(t *testing.T, p *PKI, cert *tls.Certificate) *http.Client {
	t.Helper()
	pemCA, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemCA) {
		t.Fatalf("%s holds no certificate", p.CAFile)
	}
	conf := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: conf}}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func post(t *testing.T, c *http.Client, url, body string) (int, string, error) {
	t.Helper()
	resp, err := c.Post(url, "text/xml", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// echo answers with the request body, so a test sees that the handler
// still gets the whole body after the server has recorded it.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(w, r.Body)
})

// eventually waits for cond, which depends on the server noticing a
// closed connection; the wait is long because it only bounds a hang.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s never happened", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPKIFiles(t *testing.T) {
	p := NewPKI(t)
	srv, err := x509.ParseCertificate(p.Server.TLS.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"127.0.0.1", "localhost"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: p.CA.Pool(), DNSName: h}); err != nil {
			t.Errorf("server certificate not valid for %s under the PKI's CA: %v", h, err)
		}
	}
	pair, err := tls.LoadX509KeyPair(p.ClientCert, p.ClientKey)
	if err != nil {
		t.Fatalf("client certificate files do not load: %v", err)
	}
	cli, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if cli.Subject.CommonName != "gw-17" || !bytes.Equal(cli.Raw, p.Client.TLS.Certificate[0]) {
		t.Fatalf("client files hold %q, not the PKI's client leaf", cli.Subject.CommonName)
	}
	if _, err := cli.Verify(x509.VerifyOptions{Roots: p.CA.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client certificate does not verify for client auth: %v", err)
	}
	b, _ := pem.Decode(mustRead(t, p.CAFile))
	if b == nil || !bytes.Equal(b.Bytes, p.CA.Cert.Raw) {
		t.Fatal("CAFile does not hold the PKI's CA")
	}
	if other := NewPKI(t); other.CA.Cert.Equal(p.CA.Cert) || other.CAFile == p.CAFile {
		t.Fatal("two PKIs share a CA or a file")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStartTLSCountsAndRecords(t *testing.T) {
	p := NewPKI(t)
	s := StartTLS(t, p, echo, nil)
	if !strings.HasPrefix(s.URL, "https://127.0.0.1:") {
		t.Fatalf("URL %q, want https on loopback", s.URL)
	}
	c := client(t, p, nil)
	for i, body := range []string{"<ping/>", "<post>second</post>"} {
		code, got, err := post(t, c, s.URL, body)
		if err != nil || code != http.StatusOK || got != body {
			t.Fatalf("request %d: %d %q %v, want 200 echoing %q", i, code, got, err, body)
		}
		if string(s.LastBody()) != body {
			t.Fatalf("LastBody %q, want %q", s.LastBody(), body)
		}
	}
	if s.Hits() != 2 {
		t.Fatalf("Hits %d, want 2", s.Hits())
	}
	// Both requests went over one kept-alive connection.
	if s.Conns() != 1 || s.Closed() != 0 {
		t.Fatalf("Conns %d Closed %d, want 1 and 0", s.Conns(), s.Closed())
	}
	if r := s.Resumed(); len(r) != 2 || r[0] || r[1] {
		t.Fatalf("Resumed %v, want [false false]: one full handshake", r)
	}

	// A new connection resumes the session of the first.
	c.CloseIdleConnections()
	eventually(t, "the server seeing the idle connection close", func() bool { return s.Closed() == 1 })
	if _, _, err := post(t, c, s.URL, "<ping/>"); err != nil {
		t.Fatal(err)
	}
	if s.Conns() != 2 {
		t.Fatalf("Conns %d, want 2", s.Conns())
	}
	if r := s.Resumed(); len(r) != 3 || !r[2] {
		t.Fatalf("Resumed %v, want the third request on a resumed session", r)
	}
	r := s.Resumed()
	r[0] = true
	if s.Resumed()[0] {
		t.Fatal("Resumed hands out the server's own slice; callers can change its record")
	}
}

func TestStartTLSRejectsForeignTrust(t *testing.T) {
	p := NewPKI(t)
	s := StartTLS(t, p, echo, nil)
	if _, _, err := post(t, client(t, NewPKI(t), nil), s.URL, "<ping/>"); err == nil {
		t.Fatal("a client trusting another CA reached the server")
	}
	if s.Hits() != 0 {
		t.Fatalf("Hits %d after a failed handshake, want 0", s.Hits())
	}
}

func TestStartTLSModRequiresClientCertificate(t *testing.T) {
	p := NewPKI(t)
	s := StartTLS(t, p, echo, func(c *tls.Config) {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = p.CA.Pool()
	})
	if _, _, err := post(t, client(t, p, nil), s.URL, "<ping/>"); err == nil {
		t.Fatal("request without a client certificate passed a server that requires one")
	}
	if s.Hits() != 0 {
		t.Fatalf("Hits %d after a refused handshake, want 0", s.Hits())
	}
	pair, err := tls.LoadX509KeyPair(p.ClientCert, p.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, err := post(t, client(t, p, &pair), s.URL, "<ping/>"); err != nil || code != http.StatusOK {
		t.Fatalf("request with the PKI's client certificate: %d %v", code, err)
	}
	if s.Hits() != 1 {
		t.Fatalf("Hits %d, want 1", s.Hits())
	}
}

func TestStartPlain(t *testing.T) {
	s := StartPlain(t, echo)
	if !strings.HasPrefix(s.URL, "http://127.0.0.1:") {
		t.Fatalf("URL %q, want plain http on loopback", s.URL)
	}
	c := &http.Client{Transport: &http.Transport{}}
	code, got, err := post(t, c, s.URL, "<ping/>")
	if err != nil || code != http.StatusOK || got != "<ping/>" {
		t.Fatalf("plain request: %d %q %v", code, got, err)
	}
	if s.Hits() != 1 || s.Conns() != 1 || string(s.LastBody()) != "<ping/>" {
		t.Fatalf("Hits %d Conns %d LastBody %q", s.Hits(), s.Conns(), s.LastBody())
	}
	if len(s.Resumed()) != 0 {
		t.Fatalf("Resumed %v on a plain server, want none", s.Resumed())
	}
	c.CloseIdleConnections()
	eventually(t, "the server seeing the connection close", func() bool { return s.Closed() == 1 })
}

func TestServersCloseWithTheTest(t *testing.T) {
	p := NewPKI(t)
	var urls []string
	t.Run("inner", func(t *testing.T) {
		urls = append(urls, StartTLS(t, p, echo, nil).URL, StartPlain(t, echo).URL)
	})
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, u := range urls {
		if resp, err := c.Get(u); err == nil {
			resp.Body.Close()
			t.Errorf("%s still answers after its test ended", u)
		}
	}
}

func TestPasswordFile(t *testing.T) {
	path := PasswordFile(t, "s3cret")
	if got := string(mustRead(t, path)); got != "s3cret\n" {
		t.Fatalf("password file holds %q, want the password and a newline", got)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("password file mode %v, want 0600", st.Mode().Perm())
	}
	if other := PasswordFile(t, "x"); other == path {
		t.Fatal("two password files share a path")
	}
}
