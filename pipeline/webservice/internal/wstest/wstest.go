// Package wstest starts real HTTPS servers with test certificates for the
// web-service tests, and counts what reaches them.
package wstest

import (
	"bytes"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
)

// PKI is a test CA with a server leaf for 127.0.0.1 and localhost, and the
// CA written to a PEM file for ca_file.
type PKI struct {
	CA     *throwawayca.CA
	Server *throwawayca.Leaf
	Client *throwawayca.Leaf
	CAFile string
	// Client certificate files for mutual TLS.
	ClientCert, ClientKey string
}

// NewPKI makes a PKI whose files live in t.TempDir().
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	ca, err := throwawayca.NewCA("hl7edge test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue("server", "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Issue("gw-17")
	if err != nil {
		t.Fatal(err)
	}
	files, err := ca.WriteFiles(t.TempDir(), "client", cli)
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{CA: ca, Server: srv, Client: cli, CAFile: files.CA, ClientCert: files.Cert, ClientKey: files.Key}
}

// Server is a started test server that counts its TCP connections and
// requests.
type Server struct {
	*httptest.Server
	conns  atomic.Int64
	closed atomic.Int64
	hits   atomic.Int64

	mu       sync.Mutex
	resumed  []bool // per request over TLS: did the handshake resume a session?
	lastBody []byte
}

// Conns is the number of TCP connections accepted so far.
func (s *Server) Conns() int64 { return s.conns.Load() }

// Closed is the number of TCP connections closed so far.
func (s *Server) Closed() int64 { return s.closed.Load() }

// Hits is the number of HTTP requests that reached the handler.
func (s *Server) Hits() int64 { return s.hits.Load() }

// Resumed lists, per request, whether its TLS connection resumed a session.
func (s *Server) Resumed() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bool(nil), s.resumed...)
}

// LastBody is the body of the last request.
func (s *Server) LastBody() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastBody
}

func (s *Server) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		var body bytes.Buffer
		_, _ = body.ReadFrom(r.Body)
		s.mu.Lock()
		if r.TLS != nil {
			s.resumed = append(s.resumed, r.TLS.DidResume)
		}
		s.lastBody = body.Bytes()
		s.mu.Unlock()
		r.Body = readCloser{bytes.NewReader(body.Bytes())}
		h.ServeHTTP(w, r)
	})
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// StartTLS serves h over HTTPS with the PKI's server certificate. mod, when
// not nil, adjusts the TLS config (for example to require client
// certificates). The server is closed when the test ends.
func StartTLS(t testing.TB, p *PKI, h http.Handler, mod func(*tls.Config)) *Server {
	t.Helper()
	s := &Server{}
	hs := httptest.NewUnstartedServer(s.wrap(h))
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{p.Server.TLS}, MinVersion: tls.VersionTLS12}
	if mod != nil {
		mod(hs.TLS)
	}
	hs.Config.ConnState = s.connState
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected in some tests
	hs.StartTLS()
	s.Server = hs
	t.Cleanup(hs.Close)
	return s
}

// StartPlain serves h over plain HTTP.
func StartPlain(t testing.TB, h http.Handler) *Server {
	t.Helper()
	s := &Server{}
	hs := httptest.NewUnstartedServer(s.wrap(h))
	hs.Config.ConnState = s.connState
	hs.Start()
	s.Server = hs
	t.Cleanup(hs.Close)
	return s
}

func (s *Server) connState(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		s.conns.Add(1)
	case http.StateClosed, http.StateHijacked:
		s.closed.Add(1)
	}
}

// PasswordFile writes pw to a file in t.TempDir() and returns its path.
func PasswordFile(t testing.TB, pw string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
