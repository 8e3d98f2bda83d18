// Package conformance tests a customer's web service against docs/protocol.md
// before a gateway is pointed at it (`hl7edge check-upstream`). It sends
// only an obviously fake test message (MSH-11 = T) and reports each check
// as pass, fail, warn or skip.
package conformance

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/webservice"
	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

// Config says which web service to check and how to reach it.
type Config struct {
	URL          string // the ping URL
	LogonID      string
	Password     string // or PasswordFile
	PasswordFile string
	CAFile       string // extra roots on top of the system roots
	CertFile     string // client certificate for mutual TLS
	KeyFile      string
	// AllowedHosts, when set, is checked against the post URL as the
	// gateway would.
	AllowedHosts      []string
	AllowInsecureHTTP bool          // report http:// as a warning instead of a failure
	Timeout           time.Duration // per request; default 30s
	ExpiryWarning     time.Duration // warn when the server certificate expires sooner; default 30 days
	ComputerName      string        // default "hl7edge-check"
	PMVersion         string        // default "0.0.0.0"
}

// Check runs every check in order. A check whose prerequisite failed is
// skipped; nothing is ever posted to a URL that failed the security checks.
func Check(ctx context.Context, cfg Config) Report {
	c := &checker{cfg: cfg}
	c.run(ctx)
	return c.report
}

type checker struct {
	cfg    Config
	client *http.Client
	report Report
}

func (c *checker) add(check string, r Result, format string, args ...any) {
	c.report.Items = append(c.report.Items, Item{Check: check, Result: r, Detail: fmt.Sprintf(format, args...)})
}

func (c *checker) run(ctx context.Context) {
	if c.cfg.Timeout <= 0 {
		c.cfg.Timeout = webservice.DefaultTimeout
	}
	if c.cfg.ExpiryWarning <= 0 {
		c.cfg.ExpiryWarning = 30 * 24 * time.Hour
	}
	if c.cfg.ComputerName == "" {
		c.cfg.ComputerName = "hl7edge-check"
	}
	if c.cfg.PMVersion == "" {
		c.cfg.PMVersion = "0.0.0.0"
	}
	if c.cfg.Password == "" && c.cfg.PasswordFile != "" {
		b, err := os.ReadFile(c.cfg.PasswordFile)
		if err != nil {
			c.add("configuration", Fail, "password file: %v", err)
			return
		}
		c.cfg.Password = strings.TrimRight(string(b), "\r\n")
	}
	start, err := url.Parse(c.cfg.URL)
	if err != nil || !start.IsAbs() || start.Host == "" {
		c.add("configuration", Fail, "URL %q is not an absolute URL such as https://his.example.org/hl7/ping", c.cfg.URL)
		return
	}
	client, err := webservice.NewHTTPClient(webservice.TLSFiles{CAFile: c.cfg.CAFile, CertFile: c.cfg.CertFile, KeyFile: c.cfg.KeyFile})
	if err != nil {
		c.add("configuration", Fail, "%v", err)
		return
	}
	defer client.CloseIdleConnections()
	c.client = client

	if !c.schemeCheck("ping URL uses https", start) {
		return
	}
	postURL, ok := c.ping(ctx, start)
	c.badPasswordPing(ctx, start)
	if !ok {
		c.skip("test post acknowledged", "repeated GUID acknowledged", "connection reused", "post with a bad password refused")
		return
	}
	c.posts(ctx, postURL)
}

func (c *checker) skip(checks ...string) {
	for _, ch := range checks {
		c.add(ch, Skip, "an earlier check failed")
	}
}

func (c *checker) schemeCheck(name string, u *url.URL) bool {
	switch {
	case u.Scheme == "https":
		c.add(name, Pass, "%s", u.Host)
	case u.Scheme == "http" && c.cfg.AllowInsecureHTTP:
		c.add(name, Warn, "plain http to %s: the password travels in clear text (allowed for a lab bench only)", u.Host)
	default:
		c.add(name, Fail, "scheme %q: a gateway sends its password only over https", u.Scheme)
		return false
	}
	return true
}

// ping checks the URL list and returns the post URL when it is usable.
func (c *checker) ping(ctx context.Context, start *url.URL) (*url.URL, bool) {
	r := c.exchange(ctx, start, &wire.Ping{LogonID: c.cfg.LogonID, Password: c.cfg.Password, PMVersion: c.cfg.PMVersion, ComputerName: c.cfg.ComputerName})
	if !c.transport("ping answered", r) {
		c.report.Cause = pingCause(r)
		return nil, false
	}
	c.add("ping answered", Pass, "HTTP 200 from %s", r.host)
	c.tlsCheck(r)
	c.format("ping reply format", r)
	var reply wire.PingReply
	err := wire.DecodeReply(r.body, &reply)
	var exc *wire.Exception
	switch {
	case errors.As(err, &exc):
		c.add("ping reply shape", Fail, "EXCEPTION instead of a URL list: %s (check the logon id and password)", exc.Error())
		c.report.Cause = "the service refused the logon (an EXCEPTION to the ping): check --logon and --password-file; the protocol itself was not tested"
		return nil, false
	case err != nil:
		c.add("ping reply shape", Fail, "%v", err)
		return nil, false
	case reply.HL7PostURL == "":
		c.add("ping reply shape", Fail, "<PING> without HL7POSTURL")
		return nil, false
	}
	var notes []string
	switch strings.ToLower(strings.TrimSpace(reply.Reping)) {
	case "true", "false", "":
	default:
		notes = append(notes, fmt.Sprintf("REPING=%q is neither True nor False (read as False)", wire.Clean(reply.Reping, 20)))
	}
	if reply.LogonName() != "" && reply.LogonName() != c.cfg.LogonID {
		notes = append(notes, fmt.Sprintf("LOGONID %q differs from the logon sent", wire.Clean(reply.LogonName(), 40)))
	}
	if len(notes) > 0 {
		c.add("ping reply shape", Warn, "%s", strings.Join(notes, "; "))
	} else {
		c.add("ping reply shape", Pass, "HL7POSTURL present, REPING=%q", reply.Reping)
	}
	policy := webservice.URLPolicy{AllowInsecureHTTP: c.cfg.AllowInsecureHTTP, AllowedHosts: c.cfg.AllowedHosts}
	u, err := policy.Check("HL7POSTURL", reply.HL7PostURL)
	if err != nil {
		c.add("post URL acceptable", Fail, "%v", err)
		return nil, false
	}
	if u.Scheme == "http" {
		c.add("post URL acceptable", Warn, "plain http to %s (allowed for a lab bench only)", u.Host)
	} else {
		detail := u.Host
		if len(c.cfg.AllowedHosts) > 0 {
			detail += " matches allowed_hosts"
		}
		c.add("post URL acceptable", Pass, "%s", detail)
	}
	return u, true
}

func (c *checker) badPasswordPing(ctx context.Context, start *url.URL) {
	r := c.exchange(ctx, start, &wire.Ping{LogonID: c.cfg.LogonID, Password: badPassword(c.cfg.Password), PMVersion: c.cfg.PMVersion, ComputerName: c.cfg.ComputerName})
	c.exceptionCheck("ping with a bad password refused", r, "a URL list")
}

// exceptionCheck expects a non-empty EXCEPTION with its attributes.
func (c *checker) exceptionCheck(name string, r result, instead string) {
	if r.err != nil || r.status != http.StatusOK {
		c.add(name, Warn, "%s; the protocol answers with an EXCEPTION in an HTTP 200", r.describe())
		return
	}
	root, err := wire.Parse(r.body)
	if err != nil {
		c.add(name, Fail, "%v", err)
		return
	}
	if root.Name != "EXCEPTION" {
		c.add(name, Fail, "answered with %s (<%s>): the service accepts a wrong password", instead, wire.Clean(root.Name, 40))
		return
	}
	exc := &wire.Exception{}
	_ = root.Into(exc)
	switch {
	case exc.Empty():
		c.add(name, Warn, "an empty EXCEPTION; give ERRORCODE and ERRORMESSAGE so operators see why")
	default:
		var missing []string
		for _, a := range []struct{ name, value string }{{"METHOD", exc.Method}, {"ERRORCODE", exc.ErrorCode}, {"ERRORMESSAGE", exc.ErrorMessage}} {
			if a.value == "" {
				missing = append(missing, a.name)
			}
		}
		if len(missing) > 0 {
			c.add(name, Warn, "EXCEPTION without %s: %s", strings.Join(missing, ", "), exc.Error())
		} else {
			c.add(name, Pass, "%s", exc.Error())
		}
	}
}

func (c *checker) posts(ctx context.Context, postURL *url.URL) {
	guid := uuid.NewString()
	raw := TestMessage(time.Now())
	req := &wire.HL7{
		ID: guid, LogonID: c.cfg.LogonID, Password: c.cfg.Password, MSH: wire.ReadMSH(raw),
		PMVersion: c.cfg.PMVersion, ComputerName: c.cfg.ComputerName,
		Message: wire.Message{ID: guid, Data: wire.EncodeMessage(raw)},
	}
	first := c.exchange(ctx, postURL, req)
	if !c.ackCheck("test post acknowledged", first, guid) {
		c.skip("repeated GUID acknowledged", "connection reused")
	} else {
		second := c.exchange(ctx, postURL, req)
		if c.ackCheck("repeated GUID acknowledged", second, guid) {
			if second.reused {
				c.add("connection reused", Pass, "the second post went over the first post's connection (keep-alive)")
			} else {
				c.add("connection reused", Warn, "every post opens a new connection; enable HTTP keep-alive to save a TLS handshake per message")
			}
		} else {
			c.skip("connection reused")
		}
	}
	bad := *req
	bad.ID, bad.Password = uuid.NewString(), badPassword(c.cfg.Password)
	bad.Message.ID = bad.ID
	c.exceptionCheck("post with a bad password refused", c.exchange(ctx, postURL, &bad), "an ACK")
}

func (c *checker) ackCheck(name string, r result, guid string) bool {
	if !c.transport(name, r) {
		return false
	}
	var ack wire.Ack
	err := wire.DecodeReply(r.body, &ack)
	var exc *wire.Exception
	switch {
	case errors.As(err, &exc):
		c.add(name, Fail, "%s", exc.Error())
		return false
	case err != nil:
		c.add(name, Fail, "%v", err)
		return false
	case ack.GUID() != guid:
		c.add(name, Fail, "the ACK names %q, want the posted GUID %s", wire.Clean(ack.GUID(), 64), guid)
		return false
	case ack.MessageID == "":
		c.add(name, Warn, "GUID in ID instead of MESSAGEID (accepted)")
	default:
		c.add(name, Pass, "ACK MESSAGEID=%s", guid)
	}
	return true
}

// pingCause says why the first request got no usable answer, with the flag
// that most likely cures it.
func pingCause(r result) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	switch {
	case errors.As(r.err, &unknown):
		return "the service's certificate is not from a CA this machine trusts: give its CA with --ca; the protocol itself was not tested"
	case errors.As(r.err, &host):
		return "the service's certificate does not name the host in --url: use the name it carries; the protocol itself was not tested"
	case r.err != nil && health.IsTLSFailure(r.err):
		return "the TLS handshake failed (a client certificate required? give --cert and --key); the protocol itself was not tested"
	case r.err != nil:
		return "the service did not answer: check --url and that it is reachable from here; the protocol itself was not tested"
	}
	return ""
}

// transport checks that an exchange got an HTTP 200 at all.
func (c *checker) transport(name string, r result) bool {
	if r.err != nil || r.status != http.StatusOK {
		c.add(name, Fail, "%s", r.describe())
		return false
	}
	return true
}

func (c *checker) tlsCheck(r result) {
	if r.tls == nil {
		c.add("TLS", Warn, "no TLS: the connection is not encrypted")
		return
	}
	v := map[uint16]string{tls.VersionTLS12: "1.2", tls.VersionTLS13: "1.3"}[r.tls.Version]
	issuer := ""
	if len(r.tls.PeerCertificates) > 0 {
		cert := r.tls.PeerCertificates[0]
		issuer = fmt.Sprintf(", certificate for %s issued by %q, valid until %s", strings.Join(cert.DNSNames, ","), cert.Issuer.CommonName, cert.NotAfter.Format("2006-01-02"))
		if time.Until(cert.NotAfter) < c.cfg.ExpiryWarning {
			c.add("TLS", Warn, "TLS %s%s: expires within %s", v, issuer, c.cfg.ExpiryWarning)
			return
		}
	}
	c.add("TLS", Pass, "TLS %s, verified%s", v, issuer)
}

// format reports what a lenient client tolerates but a strict one might not.
func (c *checker) format(name string, r result) {
	var notes []string
	mt, _, _ := mime.ParseMediaType(r.contentType)
	if mt != "text/xml" && mt != "application/xml" {
		notes = append(notes, fmt.Sprintf("Content-Type %q (want text/xml)", wire.Clean(r.contentType, 60)))
	}
	body := bytes.TrimPrefix(r.body, []byte{0xEF, 0xBB, 0xBF})
	if len(body) != len(r.body) {
		notes = append(notes, "a UTF-8 BOM")
	}
	if bytes.HasPrefix(bytes.TrimSpace(body), []byte("<?xml")) {
		notes = append(notes, "an XML declaration")
	}
	if len(notes) == 0 {
		c.add(name, Pass, "text/xml without declaration")
		return
	}
	c.add(name, Warn, "accepted, but the reply has %s", strings.Join(notes, ", "))
}

type result struct {
	status      int
	contentType string
	body        []byte
	tls         *tls.ConnectionState
	reused      bool
	err         error
	host        string
	timeout     time.Duration
}

func (r result) describe() string {
	if r.err != nil {
		return fmt.Sprintf("no reply from %s: %v", r.host, r.err)
	}
	if r.status/100 == 3 {
		return fmt.Sprintf("HTTP %d from %s: redirects are not followed, configure the final URL", r.status, r.host)
	}
	return fmt.Sprintf("HTTP %d from %s, want 200", r.status, r.host)
}

func (c *checker) exchange(ctx context.Context, target *url.URL, v any) result {
	res := result{host: target.Host, timeout: c.cfg.Timeout}
	body, err := wire.Encode(v)
	if err != nil {
		res.err = err
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { res.reused = info.Reused },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), bytes.NewReader(body))
	if err != nil {
		res.err = err
		return res
	}
	req.Header.Set("Content-Type", wire.ContentType)
	resp, err := c.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no reply within %s", c.cfg.Timeout)
		}
		res.err = err
		return res
	}
	defer resp.Body.Close()
	res.status, res.contentType, res.tls = resp.StatusCode, resp.Header.Get("Content-Type"), resp.TLS
	res.body, res.err = io.ReadAll(io.LimitReader(resp.Body, webservice.MaxReplyBytes))
	return res
}

func badPassword(pw string) string { return "not-" + pw + "-" + uuid.NewString()[:8] }

// TestMessage is the synthetic message the checker posts: processing ID T,
// a patient that cannot be mistaken for a real one, and no clinical data.
func TestMessage(now time.Time) []byte {
	ts := now.UTC().Format("20060102150405")
	return []byte("MSH|^~\\&|HL7EDGE|CONFORMANCE-CHECK|CHECK|CHECK|" + ts + "||ADT^A08^ADT_A01|HL7EDGECHK" + ts + "|T|2.5.1\r" +
		"EVN|A08|" + ts + "\r" +
		"PID|1||HL7EDGE-TEST-0000^^^HL7EDGE^MR||TEST^CONFORMANCE^NOT A PATIENT||19000101|U\r" +
		"PV1|1|N\r")
}
