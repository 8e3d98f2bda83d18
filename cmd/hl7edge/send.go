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
	ca := fs.String("ca", "", "CA certificate file for TLS (system roots otherwise)")
	timeout := fs.Duration("timeout", 30*time.Second, "time to wait for each ACK")
	quiet := fs.Bool("quiet", false, "print only failures and the summary")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *to == "" || fs.NArg() == 0 {
		fmt.Fprintln(stderr, "usage: hl7edge send --to HOST:PORT [--tls --ca FILE] FILE...")
		return 2
	}
	var msgs [][]byte
	for _, f := range fs.Args() {
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
	var tlsConf *tls.Config
	if *useTLS {
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
		if *ca != "" {
			pem, err := os.ReadFile(*ca)
			if err != nil {
				fmt.Fprintf(stderr, "send: %v\n", err)
				return 1
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				fmt.Fprintf(stderr, "send: %s holds no PEM certificate\n", *ca)
				return 1
			}
			tlsConf.RootCAs = pool
		}
	}
	dctx, cancel := context.WithTimeout(ctx, *timeout)
	c, err := mllp.Dial(dctx, *to, tlsConf)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "send: %v\n", err)
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
