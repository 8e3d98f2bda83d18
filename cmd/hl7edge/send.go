package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
)

// cmdSend is the MLLP client. It exits 1 unless every message got AA or CA.
func cmdSend(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	to := fs.String("to", "", "HOST:PORT of the MLLP listener")
	useTLS := fs.Bool("tls", false, "use TLS")
	ca := fs.String("ca", "", "CA certificate file for TLS, on top of the system roots (implies --tls)")
	cert := fs.String("cert", "", "client certificate (PEM) for a listener that requires one (implies --tls; with --key)")
	key := fs.String("key", "", "the client certificate's key (PEM)")
	serverName := fs.String("server-name", "", "the name the listener's certificate must carry, when not the host in --to (implies --tls)")
	timeout := fs.Duration("timeout", 30*time.Second, "time to wait for each ACK")
	quiet := fs.Bool("quiet", false, "print only failures and the summary")
	files, err := parseAnyOrder(fs, args)
	if err != nil {
		return 2
	}
	if *to == "" || len(files) == 0 {
		fmt.Fprintln(stderr, "usage: hl7edge send --to HOST:PORT [--tls] [--ca FILE] [--cert FILE --key FILE] [--server-name NAME] FILE...")
		return 2
	}
	var msgs [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(stderr, "send: %v\n", err)
			return 1
		}
		got := mllp.SplitMessages(b)
		if len(got) == 0 {
			fmt.Fprintf(stderr, "send: %s holds no HL7 message (each must start with MSH, MLLP-framed or one per line group)\n", f)
			return 1
		}
		msgs = append(msgs, got...)
	}
	tlsConf, err := sendTLS(*useTLS, *ca, *cert, *key, *serverName)
	if err != nil {
		fmt.Fprintf(stderr, "send: %v\n", err)
		return 2
	}
	dctx, cancel := context.WithTimeout(ctx, *timeout)
	c, err := mllp.Dial(dctx, *to, tlsConf)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "send: %v\n", err)
		if hint := tlsHint(err); hint != "" {
			fmt.Fprintf(stderr, "send: %s\n", hint)
		}
		return 1
	}
	defer c.Close()

	var bar *progressbar.ProgressBar
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && len(msgs) > 1 {
		bar = progressbar.NewOptions(len(msgs), progressbar.OptionSetWriter(stderr),
			progressbar.OptionSetDescription("sending"), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
	}
	ok, bad := 0, 0
	for i, m := range msgs {
		sctx, cancel := context.WithTimeout(ctx, *timeout)
		ack, err := c.Send(sctx, m)
		cancel()
		if err != nil {
			fmt.Fprintf(stderr, "message %d: %v\n", i+1, err)
			if hint := tlsHint(err); hint != "" {
				fmt.Fprintf(stderr, "send: %s\n", hint)
			}
			bad += len(msgs) - i
			break
		}
		code, acked, text, perr := hl7.ParseACK(ack)
		switch {
		case perr != nil:
			bad++
			fmt.Fprintf(stderr, "message %d: unreadable ACK: %v\n", i+1, perr)
		case code == "AA" || code == "CA":
			ok++
			if !*quiet && bar == nil {
				fmt.Fprintf(stdout, "%s %s\n", code, acked)
			}
		default:
			bad++
			fmt.Fprintf(stdout, "%s %s %s\n", code, acked, text)
		}
		if bar != nil {
			_ = bar.Add(1)
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			break
		}
	}
	fmt.Fprintf(stderr, "%d sent, %d accepted, %d not accepted\n", ok+bad, ok, bad)
	if bad > 0 || ok != len(msgs) {
		return 1
	}
	return 0
}

// sendTLS builds the client's TLS configuration, or nil for plain TCP. Any
// TLS flag turns TLS on: giving a certificate and then talking plain TCP
// would only fail later, further from the cause.
func sendTLS(on bool, ca, cert, key, serverName string) (*tls.Config, error) {
	if !on && ca == "" && cert == "" && key == "" && serverName == "" {
		return nil, nil
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("--cert and --key go together: give both for a client certificate, or neither")
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool() // a bare board may have no system roots
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s holds no PEM certificate", ca)
		}
		conf.RootCAs = pool
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("--cert %s / --key %s: %w (both must be PEM and belong together)", cert, key, err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	return conf, nil
}

// tlsHint says which flag most likely cures a failed TLS handshake, or "".
func tlsHint(err error) string {
	var host x509.HostnameError
	var unknown x509.UnknownAuthorityError
	var alert tls.AlertError
	switch {
	case errors.As(err, &host):
		return "the listener's certificate does not name the address dialled: give the name it carries with --server-name"
	case errors.As(err, &unknown):
		return "the listener's certificate is not from a trusted CA: give its CA with --ca"
	case errors.As(err, &alert) || strings.Contains(err.Error(), "certificate required"):
		return "the listener refused the connection's certificate: give one it trusts with --cert and --key"
	}
	return ""
}
