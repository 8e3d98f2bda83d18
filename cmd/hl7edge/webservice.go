package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

// cmdWebservice runs the reference web service until interrupted.
func cmdWebservice(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("webservice", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8443", "address to listen on")
	store := fs.String("store", "", "directory for received messages (<GUID>.hl7 and received.log)")
	mailbox := fs.String("mailbox", "", "directory of messages to offer to a data source (removed once acknowledged)")
	cert := fs.String("tls-cert", "", "TLS certificate (PEM); without it the service speaks plain HTTP")
	key := fs.String("tls-key", "", "TLS key (PEM)")
	logon := fs.String("logon", "", "logon id clients must send (empty: any)")
	passFile := fs.String("password-file", "", "file holding the password clients must send")
	reping := fs.Bool("reping", false, "ask destinations to ping before every post (REPING=\"True\")")
	public := fs.String("public-url", "", "base URL handed out in ping replies (default: the URL the ping came to)")
	var f refserver.Faults
	fs.DurationVar(&f.Delay, "delay", 0, "fault: wait this long before every reply")
	fs.IntVar(&f.ExceptionEvery, "exception-every", 0, "fault: EXCEPTION on every Nth request")
	fs.IntVar(&f.Status500Every, "500-every", 0, "fault: HTTP 500 on every Nth request")
	fs.IntVar(&f.WrongAckEvery, "wrong-ack-every", 0, "fault: ACK every Nth post with another GUID")
	fs.IntVar(&f.DropAckEvery, "drop-ack-every", 0, "fault: lose the reply to every Nth data-source ack")
	fs.IntVar(&f.LoseAckEvery, "lose-ack-every", 0, "fault: ignore every Nth data-source ack and answer HTTP 500 (the message is offered again)")
	fs.IntVar(&f.ExceptionOnGetEvery, "exception-on-get-every", 0, "fault: EXCEPTION on every Nth get")
	fs.IntVar(&f.Status500OnMailboxEvery, "500-on-mailbox-every", 0, "fault: HTTP 500 on every Nth mailbox request")
	if err := fs.Parse(args); err != nil {
		return errors.New("bad arguments")
	}
	if *store == "" {
		return errors.New("--store DIR is required")
	}
	var password string
	if *passFile != "" {
		b, err := os.ReadFile(*passFile)
		if err != nil {
			return fmt.Errorf("password file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	srv, err := refserver.New(refserver.Config{StoreDir: *store, MailboxDir: *mailbox, Logon: *logon, Password: password, PublicURL: *public, Reping: *reping, Faults: f, Log: log})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	scheme := "http"
	if *cert != "" || *key != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}})
		scheme = "https"
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	fmt.Fprintf(stdout, "reference web service on %s://%s/hl7/ping (store %s)\n", scheme, ln.Addr(), *store)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	case err := <-errc:
		return err
	}
}
