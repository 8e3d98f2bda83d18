package throwawayca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *CA, cn string, hosts ...string) *Leaf {
	t.Helper()
	l, err := ca.Issue(cn, hosts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func parseLeaf(t *testing.T, l *Leaf) *x509.Certificate {
	t.Helper()
	b, rest := pem.Decode(l.CertPEM)
	if b == nil || b.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("leaf CertPEM is not exactly one CERTIFICATE block: %q", l.CertPEM)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCAIsACertificateAuthority(t *testing.T) {
	ca := newCA(t, "unit CA")
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid {
		t.Fatalf("CA cert: IsCA=%v BasicConstraintsValid=%v, want both true", c.IsCA, c.BasicConstraintsValid)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatalf("CA key usage %b lacks CertSign", c.KeyUsage)
	}
	if c.Subject.CommonName != "unit CA" || c.Issuer.CommonName != "unit CA" {
		t.Fatalf("CA subject %q issuer %q, want self-signed \"unit CA\"", c.Subject.CommonName, c.Issuer.CommonName)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Fatalf("CA is not self-signed: %v", err)
	}
	b, _ := pem.Decode(ca.CertPEM)
	if b == nil || b.Type != "CERTIFICATE" || !bytes.Equal(b.Bytes, c.Raw) {
		t.Fatal("CertPEM does not hold the CA certificate")
	}
	other := newCA(t, "unit CA")
	if c.SerialNumber.Cmp(other.Cert.SerialNumber) == 0 || c.PublicKey.(*ecdsa.PublicKey).Equal(other.Cert.PublicKey) {
		t.Fatal("two CAs share a serial or a key; each test must get its own")
	}
}

func TestLeafChainsToItsCAOnly(t *testing.T) {
	ca := newCA(t, "unit CA")
	leaf := parseLeaf(t, issue(t, ca, "server", "localhost", "127.0.0.1"))
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("leaf does not verify against its CA for usage %v: %v", usage, err)
		}
	}
	foreign := newCA(t, "unit CA") // same name, different key: trust is by key, not name
	_, err := leaf.Verify(x509.VerifyOptions{Roots: foreign.Pool()})
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("leaf verified against a foreign CA: err=%v, want UnknownAuthorityError", err)
	}
	if leaf.IsCA {
		t.Fatal("leaf is a CA; it must not be able to sign certificates")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.KeyUsage&x509.KeyUsageCertSign != 0 {
		t.Fatalf("leaf key usage %b: want DigitalSignature and no CertSign", leaf.KeyUsage)
	}
	if leaf.Subject.CommonName != "server" || leaf.Issuer.CommonName != "unit CA" {
		t.Fatalf("leaf subject %q issuer %q", leaf.Subject.CommonName, leaf.Issuer.CommonName)
	}
}

func TestLeafHostNames(t *testing.T) {
	ca := newCA(t, "unit CA")
	leaf := parseLeaf(t, issue(t, ca, "server", "localhost", "gw.example.org", "127.0.0.1", "::1"))
	if got := strings.Join(leaf.DNSNames, ","); got != "localhost,gw.example.org" {
		t.Fatalf("DNS names %q", got)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !leaf.IPAddresses[1].Equal(net.ParseIP("::1")) {
		t.Fatalf("IP addresses %v, want 127.0.0.1 and ::1", leaf.IPAddresses)
	}
	for _, h := range []string{"localhost", "gw.example.org", "127.0.0.1", "::1"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("VerifyHostname(%q): %v", h, err)
		}
	}
	for _, h := range []string{"other.example.org", "127.0.0.2", "server"} {
		if err := leaf.VerifyHostname(h); err == nil {
			t.Errorf("VerifyHostname(%q) passed; the leaf was not issued for it", h)
		}
	}
	client := parseLeaf(t, issue(t, ca, "gw-17"))
	if len(client.DNSNames)+len(client.IPAddresses) != 0 {
		t.Fatalf("leaf issued without hosts carries %v %v", client.DNSNames, client.IPAddresses)
	}
}

func TestValidityWindow(t *testing.T) {
	ca := newCA(t, "unit CA")
	leaf := parseLeaf(t, issue(t, ca, "server", "localhost"))
	now := time.Now()
	for name, c := range map[string]*x509.Certificate{"CA": ca.Cert, "leaf": leaf} {
		// Valid now with slack both ways, so a test machine whose clock
		// is a little off still verifies, and short-lived.
		if !c.NotBefore.Before(now.Add(-30*time.Minute)) || !c.NotAfter.After(now.Add(12*time.Hour)) {
			t.Errorf("%s valid %v .. %v, want from before now-30m to after now+12h", name, c.NotBefore, c.NotAfter)
		}
		if c.NotAfter.After(now.Add(48 * time.Hour)) {
			t.Errorf("%s valid until %v; a throw-away certificate must expire soon", name, c.NotAfter)
		}
	}
	opts := x509.VerifyOptions{Roots: ca.Pool(), DNSName: "localhost"}
	opts.CurrentTime = leaf.NotAfter.Add(time.Minute)
	_, err := leaf.Verify(opts)
	var inv x509.CertificateInvalidError
	if !errors.As(err, &inv) || inv.Reason != x509.Expired {
		t.Fatalf("verify after expiry: %v, want CertificateInvalidError Expired", err)
	}
	opts.CurrentTime = leaf.NotBefore.Add(-time.Minute)
	if _, err := leaf.Verify(opts); !errors.As(err, &inv) || inv.Reason != x509.Expired {
		t.Fatalf("verify before NotBefore: %v, want CertificateInvalidError Expired", err)
	}
}

func TestKeyPEMMatchesCertificate(t *testing.T) {
	ca := newCA(t, "unit CA")
	l := issue(t, ca, "server", "localhost")
	b, _ := pem.Decode(l.KeyPEM)
	if b == nil || b.Type != "EC PRIVATE KEY" {
		t.Fatalf("KeyPEM is not an EC PRIVATE KEY block")
	}
	key, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(parseLeaf(t, l).PublicKey) {
		t.Fatal("KeyPEM is not the key of CertPEM")
	}
	if len(l.TLS.Certificate) != 1 || !bytes.Equal(l.TLS.Certificate[0], parseLeaf(t, l).Raw) {
		t.Fatal("Leaf.TLS does not carry the leaf certificate")
	}
}

func TestWriteFiles(t *testing.T) {
	ca := newCA(t, "unit CA")
	l := issue(t, ca, "gw-17")
	dir := t.TempDir()
	f, err := ca.WriteFiles(dir, "client", l)
	if err != nil {
		t.Fatal(err)
	}
	want := Files{CA: filepath.Join(dir, "client-ca.pem"), Cert: filepath.Join(dir, "client-cert.pem"), Key: filepath.Join(dir, "client-key.pem")}
	if f != want {
		t.Fatalf("files %+v, want %+v", f, want)
	}
	for path, data := range map[string][]byte{f.CA: ca.CertPEM, f.Cert: l.CertPEM, f.Key: l.KeyPEM} {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s does not hold what was written", path)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600 (it may hold a private key)", path, st.Mode().Perm())
		}
	}
	if _, err := tls.LoadX509KeyPair(f.Cert, f.Key); err != nil {
		t.Fatalf("written cert and key do not load as a key pair: %v", err)
	}
	if _, err := ca.WriteFiles(filepath.Join(dir, "missing"), "client", l); err == nil {
		t.Fatal("WriteFiles into a missing directory succeeded")
	}
}

// handshake runs one TLS handshake over loopback TCP between a server and
// a client with the given configs and returns each side's error.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		err = c.(*tls.Conn).Handshake()
		if err == nil {
			_, err = c.Write([]byte("ok"))
		}
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err == nil {
		var b [2]byte
		_, err = io.ReadFull(c, b[:])
		c.Close()
	}
	return <-done, err
}

func TestTLSHandshake(t *testing.T) {
	ca := newCA(t, "unit CA")
	srv := issue(t, ca, "server", "127.0.0.1", "localhost")
	cli := issue(t, ca, "gw-17")
	foreign := newCA(t, "unit CA")
	foreignCli := issue(t, foreign, "gw-17")

	serverConf := func(clientCAs *x509.CertPool) *tls.Config {
		c := &tls.Config{Certificates: []tls.Certificate{srv.TLS}, MinVersion: tls.VersionTLS12}
		if clientCAs != nil {
			c.ClientCAs = clientCAs
			c.ClientAuth = tls.RequireAndVerifyClientCert
		}
		return c
	}
	clientConf := func(roots *x509.CertPool, name string, l *Leaf) *tls.Config {
		c := &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12}
		if l != nil {
			c.Certificates = []tls.Certificate{l.TLS}
		}
		return c
	}

	for _, tc := range []struct {
		name   string
		server *tls.Config
		client *tls.Config
		ok     bool
	}{
		{"server auth", serverConf(nil), clientConf(ca.Pool(), "127.0.0.1", nil), true},
		{"server auth by DNS name", serverConf(nil), clientConf(ca.Pool(), "localhost", nil), true},
		{"mutual TLS", serverConf(ca.Pool()), clientConf(ca.Pool(), "localhost", cli), true},
		{"client trusts a foreign CA", serverConf(nil), clientConf(foreign.Pool(), "127.0.0.1", nil), false},
		{"server name not on the certificate", serverConf(nil), clientConf(ca.Pool(), "gw.example.org", nil), false},
		{"client certificate from a foreign CA", serverConf(ca.Pool()), clientConf(ca.Pool(), "localhost", foreignCli), false},
		{"no client certificate", serverConf(ca.Pool()), clientConf(ca.Pool(), "localhost", nil), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serr, cerr := handshake(t, tc.server, tc.client)
			if tc.ok && (serr != nil || cerr != nil) {
				t.Fatalf("handshake failed: server %v, client %v", serr, cerr)
			}
			if !tc.ok && (serr == nil || cerr == nil) {
				t.Fatalf("handshake passed where it must fail: server %v, client %v", serr, cerr)
			}
		})
	}
}
