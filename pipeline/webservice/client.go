package webservice

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

// ErrTransport marks a transport failure (docs/protocol.md, Common rules): a
// status other than 200, a body that is not the expected XML, a timeout, a
// reset, a redirect, or an ACK for another GUID. The message was not
// delivered; retry after the back-off.
var ErrTransport = errors.New("transport failure")

// ErrRefusedURL marks a URL handed out by a ping reply that breaks the
// profile's security rules (https, allowed_hosts). It is treated as an
// EXCEPTION: nothing is sent to that URL.
var ErrRefusedURL = errors.New("URL refused")

// MaxReplyBytes bounds any reply body (the conformance checker reads up to
// it). The gateway reads less: each reply up to what it can hold.
const MaxReplyBytes = 32 << 20

// Reply limits by what each reply can hold. A body is read only up to its
// limit and the rest is never read, so a hostile 100 MB reply costs the
// limit, not 100 MB.
const (
	// MaxSmallReplyBytes bounds the replies that are one element with a few
	// attributes: ping, post (its ACK) and ack.
	MaxSmallReplyBytes = 64 << 10
	// MaxMailboxReplyBytes bounds a mailbox reply: one short element per
	// waiting message, room for tens of thousands.
	MaxMailboxReplyBytes = 4 << 20
)

// MaxGetReplyBytes bounds a get reply: one message of at most maxMessage
// bytes in Base64 (4 bytes per 3, with room for line breaks) plus its
// envelope.
func MaxGetReplyBytes(maxMessage int64) int64 {
	b64 := (maxMessage + 2) / 3 * 4
	return b64 + b64/32 + MaxSmallReplyBytes
}

// TLSFiles names the PEM files of one web-service profile.
type TLSFiles struct {
	CAFile   string // extra roots added to the system roots
	CertFile string // client certificate for mutual TLS
	KeyFile  string
}

// NewHTTPClient returns the client for one profile: TLS 1.2 or newer with
// verification against the system roots plus CAFile, a client certificate
// when given, keep-alive and TLS session resumption so that a post on a
// warm connection is one round trip, and no redirects (a 3xx comes back as
// the response and is a transport failure). Requests are bounded by their
// context, not by the client.
func NewHTTPClient(files TLSFiles) (*http.Client, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if files.CAFile != "" {
		pem, err := os.ReadFile(files.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate: give the CA certificate in PEM form", files.CAFile)
		}
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		RootCAs:            roots,
		ClientSessionCache: tls.NewLRUClientSessionCache(32),
	}
	if files.CertFile != "" || files.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   30 * time.Second,
		MaxIdleConns:          4,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}

// URLPolicy is the profile's rule for URLs a ping reply hands out
// (docs/protocol.md, Security).
type URLPolicy struct {
	AllowInsecureHTTP bool
	AllowedHosts      []string // glob patterns matched against the host name, or host:port when the pattern has a port
}

// Check parses a handed-out URL and refuses it unless it is https (or http
// when allowed), without credentials, and on an allowed host; such errors
// wrap ErrRefusedURL. A URL that is not absolute wraps ErrTransport.
func (p URLPolicy) Check(attr, raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || !u.IsAbs() || u.Host == "" {
		// Not a security decision but a malformed reply (docs/protocol.md:
		// "anything else is a transport failure").
		return nil, fmt.Errorf("%w: %s %q is not an absolute URL", ErrTransport, attr, wire.Clean(raw, 200))
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !p.AllowInsecureHTTP {
			return nil, fmt.Errorf("%w: %s points to plain http://%s; only https is allowed (allow_insecure_http is off)", ErrRefusedURL, attr, wire.Clean(u.Host, 100))
		}
	default:
		return nil, fmt.Errorf("%w: %s has scheme %q; want https", ErrRefusedURL, attr, wire.Clean(u.Scheme, 20))
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: %s carries credentials in the URL", ErrRefusedURL, attr)
	}
	if len(p.AllowedHosts) > 0 && !p.hostAllowed(u) {
		return nil, fmt.Errorf("%w: %s host %s matches none of allowed_hosts %v", ErrRefusedURL, attr, wire.Clean(u.Host, 100), p.AllowedHosts)
	}
	return u, nil
}

func (p URLPolicy) hostAllowed(u *url.URL) bool {
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	hostPort := host
	if port := u.Port(); port != "" {
		hostPort = net.JoinHostPort(host, port)
	}
	for _, pat := range p.AllowedHosts {
		pat = strings.ToLower(strings.TrimSpace(pat))
		subject := host
		if _, _, err := net.SplitHostPort(pat); err == nil {
			subject = hostPort
		}
		if ok, _ := path.Match(pat, subject); ok {
			return true
		}
	}
	return false
}

// exchanger sends one request element and reads one reply element; the
// destination, the source and the conformance checker all talk through it.
type exchanger struct {
	client    *http.Client
	timeout   time.Duration
	userAgent string
	password  string // only to scrub it from anything a server echoes back
}

// do posts req to target and decodes the reply, read up to limit bytes,
// into reply. A reply that is
// an EXCEPTION comes back as an error wrapping *wire.Exception (an empty
// EXCEPTION included: the caller decides whether that means OK); every
// transport failure wraps ErrTransport. Errors name the operation and host,
// never the body.
func (x *exchanger) do(ctx context.Context, op string, target *url.URL, req, reply any, limit int64) error {
	body, err := wire.Encode(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, x.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s to %s: %w: %w", op, target.Host, ErrTransport, err)
	}
	hreq.Header.Set("Content-Type", wire.ContentType)
	hreq.Header.Set("Accept", "text/xml, application/xml")
	if x.userAgent != "" {
		hreq.Header.Set("User-Agent", x.userAgent)
	}
	resp, err := x.client.Do(hreq)
	if err != nil {
		if health.IsTLSFailure(err) {
			return fmt.Errorf("%s to %s: %w: %w", op, target.Host, ErrTransport, tlsFailure(x.netError(ctx, err)))
		}
		return fmt.Errorf("%s to %s: %w: %s", op, target.Host, ErrTransport, x.netError(ctx, err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("%s to %s: %w: reading the reply: %s", op, target.Host, ErrTransport, x.netError(ctx, err))
	}
	if resp.StatusCode != http.StatusOK {
		detail := ""
		if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode/100 == 3 {
			detail = " (redirects are not followed; configure the final URL)"
		}
		return fmt.Errorf("%s to %s: %w: HTTP status %d, want 200%s", op, target.Host, ErrTransport, resp.StatusCode, detail)
	}
	if int64(len(data)) > limit {
		// The rest stays unread: closing the body drops the connection.
		return fmt.Errorf("%s to %s: %w: the reply is over %d bytes, the most a %s reply can hold; reading stopped there", op, target.Host, ErrTransport, limit, op)
	}
	err = wire.DecodeReply(data, reply)
	var exc *wire.Exception
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exc):
		x.scrub(exc)
		return fmt.Errorf("%s to %s: %w", op, target.Host, exc)
	default:
		return fmt.Errorf("%s to %s: %w: %w", op, target.Host, ErrTransport, err)
	}
}

// tlsFailure is the text of a transport failure in the TLS handshake or
// certificate check. It is counted apart (health.CounterTLSErrors) because
// the FAULT LED shows it as code 4: someone must fix a certificate, a
// CA file or the clock, not wait for the peer to come back.
type tlsFailure string

func (e tlsFailure) Error() string { return string(e) }

// netError describes a failed request without the URL (which net/http puts
// in every error and which may carry a server's session token).
func (x *exchanger) netError(ctx context.Context, err error) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Sprintf("no reply within the timeout of %s", x.timeout)
	}
	if ctx.Err() != nil {
		return "canceled"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// scrub blanks the password wherever a server echoed it into an EXCEPTION,
// because EXCEPTIONs are logged and reported.
func (x *exchanger) scrub(e *wire.Exception) {
	if len(x.password) < 3 {
		return
	}
	for _, f := range []*string{&e.Method, &e.ErrorCode, &e.ErrorMessage, &e.Additional} {
		*f = strings.ReplaceAll(*f, x.password, "[redacted]")
	}
}

// readPassword reads a password file; a trailing line break is not part of
// the password.
func readPassword(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("password_file: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("password_file %s is empty: write the web-service password in it", file)
	}
	return pw, nil
}

// isException reports whether err is an EXCEPTION reply or a refused URL,
// which the protocol treats alike.
func isException(err error) (*wire.Exception, bool) {
	var exc *wire.Exception
	if errors.As(err, &exc) {
		return exc, true
	}
	return nil, errors.Is(err, ErrRefusedURL)
}
