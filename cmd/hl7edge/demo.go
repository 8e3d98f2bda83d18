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
	"path/filepath"
	"strings"
	"time"

	"github.com/creack/pty"

	"github.com/hl7edge/hl7edge/board"
	"github.com/hl7edge/hl7edge/board/sim"
	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/testpki"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

// Sample messages: made-up patients, never real ones.
var demoMessages = []string{
	"MSH|^~\\&|MONITOR|WARD3|EHR|HOSP|20261122101500||ADT^A01^ADT_A01|DEMO0001|P|2.5.1\rEVN|A01|20261122101500\rPID|1||DEMO-0001^^^HOSP^MR||DEMO^PATIENT||19700101|U\rPV1|1|I|ICU^01^A\r",
	"MSH|^~\\&|LAB|WARD3|EHR|HOSP|20261122101600||ORU^R01^ORU_R01|DEMO0002|P|2.5.1\rPID|1||DEMO-0001^^^HOSP^MR||DEMO^PATIENT\rOBR|1||LAB-77|GLU^Glucose\rOBX|1|NM|GLU^Glucose||5.4|mmol/L|3.9-6.1|N|||F\r",
	"MSH|^~\\&|LAB|WARD3|EHR|HOSP|20261122101700||ORU^R01^ORU_R01|DEMO0003|T|2.5.1\rPID|1||TEST-0000\rOBX|1|NM|GLU||0.0\r",
}

const demoSerialMessage = "MSH|^~\\&|PUMP|WARD3|EHR|HOSP|20261122101800||ORU^R01^ORU_R01|DEMO0004|P|2.5.1\rPID|1||DEMO-0002^^^HOSP^MR||DEMO^SECOND\rOBX|1|NM|RATE^Infusion rate||12|mL/h\r"

const demoConfig = `# hl7edge demo configuration: everything on loopback.
device:
  id: demo-gw
  board: sim
spool:
  dir: {{DIR}}/spool
  max_bytes: 256MiB
admin:
  socket: {{DIR}}/admin.sock
log:
  level: warn
sources:
  - name: monitors
    type: mllp
    listen: {{MLLP}}
    max_connections: 16
    idle_timeout: 5m
  - name: pump-line
    type: serial
    device: {{DIR}}/ttyDEMO
    baud: 9600
    framing: mllp
destinations:
  - name: tests-bin
    type: rubbish
    match:
      any: ["MSH-11.1 in T"]
  - name: ehr
    type: webservice
    url: {{URL}}/hl7/ping
    logon_id: demo-gw
    password_file: {{DIR}}/ehr.pass
    ca_file: {{DIR}}/demo-ca.pem
    allowed_hosts: ["127.0.0.1"]
    max_backoff: 10s
    match:
      all: ["MSH-9.1 in ADT,ORU"]
  - name: archive
    type: file
    dir: {{DIR}}/archive
`

// cmdDemo runs the whole flow on loopback: a reference web service over
// HTTPS with a throw-away CA, the gateway with an MLLP port and a virtual
// serial port, sample messages through both, and then waits for the user.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "working directory (default: a new temporary one)")
	port := fs.Int("port", 2575, "MLLP port (a free one is chosen if it is taken)")
	once := fs.Bool("once", false, "exit after the samples arrive instead of waiting for Ctrl-C")
	if err := fs.Parse(args); err != nil {
		return errors.New("bad arguments")
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "hl7edge-demo-*")
		if err != nil {
			return err
		}
		*dir = d
	}
	if err := os.MkdirAll(*dir, 0o750); err != nil {
		return err
	}
	say := func(f string, a ...any) { fmt.Fprintf(stdout, f+"\n", a...) }
	say("hl7edge %s demo in %s", version, *dir)

	// 1. The reference web service, over real TLS with a demo CA.
	ca, err := testpki.NewCA("hl7edge demo CA")
	if err != nil {
		return err
	}
	leaf, err := ca.Issue("127.0.0.1", "127.0.0.1", "localhost")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "demo-ca.pem"), ca.CertPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "ehr.pass"), []byte("demo-password\n"), 0o600); err != nil {
		return err
	}
	store := filepath.Join(*dir, "webservice-store")
	ref, err := refserver.New(refserver.Config{StoreDir: store, Logon: "demo-gw", Password: "demo-password"})
	if err != nil {
		return err
	}
	defer ref.Close()
	wsLn, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{leaf.TLS}})
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: ref, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	go func() { _ = hs.Serve(wsLn) }()
	defer hs.Close()
	wsURL := "https://" + wsLn.Addr().String()
	say("  reference web service  %s/hl7/ping  (stores into %s)", wsURL, store)

	// 2. A virtual serial port: the gateway reads the pty, we play the device.
	master, slave, err := pty.Open()
	if err != nil {
		return fmt.Errorf("virtual serial port: %w", err)
	}
	defer master.Close()
	defer slave.Close()
	tty := filepath.Join(*dir, "ttyDEMO")
	_ = os.Remove(tty)
	if err := os.Symlink(slave.Name(), tty); err != nil {
		return err
	}

	// 3. The gateway.
	mllpAddr := fmt.Sprintf("127.0.0.1:%d", *port)
	if l, err := net.Listen("tcp", mllpAddr); err == nil && *port != 0 {
		l.Close()
	} else {
		if err == nil {
			l.Close()
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		mllpAddr = l.Addr().String()
		l.Close()
	}
	cfgText := strings.NewReplacer("{{DIR}}", *dir, "{{MLLP}}", mllpAddr, "{{URL}}", wsURL).Replace(demoConfig)
	cfgPath := filepath.Join(*dir, "hl7edge.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return err
	}
	say("  gateway                MLLP on %s, serial on %s, config %s", mllpAddr, tty, cfgPath)
	say("  LEDs (sim board)       what each LED means, printed below whenever that changes\n")
	started := make(chan *appliance.Box, 1)
	gctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- appliance.Run(gctx, appliance.Options{
			ConfigPath: cfgPath, Version: version, LogOut: stderr,
			Board: func(_ *config.Config, log *slog.Logger) (board.Board, error) {
				// The LED engine describes each change of meaning; Every
				// only limits an LED that was never described.
				return sim.New(sim.Options{Writer: stdout, Log: log, Every: 10 * time.Second}), nil
			},
			Started: func(b *appliance.Box) {
				select {
				case started <- b:
				default:
				}
			},
		})
	}()
	select {
	case <-started:
	case err := <-done:
		return fmt.Errorf("gateway did not start: %w", err)
	case <-time.After(30 * time.Second):
		return errors.New("gateway did not start within 30s")
	}

	// 4. Samples through MLLP and the serial line.
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var c *mllp.Client
	for c == nil {
		if c, err = mllp.Dial(cctx, mllpAddr, nil); err != nil {
			if cctx.Err() != nil {
				return fmt.Errorf("MLLP port never opened: %w", err)
			}
			c = nil
			time.Sleep(50 * time.Millisecond)
		}
	}
	defer c.Close()
	say("sending %d sample messages over MLLP and 1 over the serial line:", len(demoMessages))
	for _, m := range demoMessages {
		ack, err := c.Send(cctx, []byte(m))
		if err != nil {
			return err
		}
		code, id, _, _ := hl7.ParseACK(ack)
		say("  MLLP   %s -> %s", id, code)
	}
	if err := mllp.WriteFrame(master, []byte(demoSerialMessage)); err != nil {
		return err
	}
	ackFrame, err := readFrameTimeout(master, 10*time.Second)
	if err != nil {
		return fmt.Errorf("serial ACK: %w", err)
	}
	code, id, _, _ := hl7.ParseACK(ackFrame)
	say("  serial %s -> %s", id, code)

	// 5. Watch them arrive upstream (the T message went to the rubbish bin).
	want := 3
	deadline := time.Now().Add(30 * time.Second)
	var got []refserver.Received
	for time.Now().Before(deadline) {
		got, _ = refserver.ReadReceived(store)
		if len(got) >= want {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	say("\narrived at the web service (each with the GUID the gateway gave it when spooling):")
	for _, r := range got {
		say("  %-10s %s", r.ControlID, r.GUID)
	}
	if len(got) < want {
		return fmt.Errorf("only %d of %d messages reached the web service in 30s", len(got), want)
	}
	say("  DEMO0003 (processing ID T) was eaten by the tests-bin rubbish bin, as configured.")
	archived, _ := filepath.Glob(filepath.Join(*dir, "archive", "*.hl7"))
	say("  %d copies in the file destination %s", len(archived), filepath.Join(*dir, "archive"))

	say(`
try next:
  bin/hl7edge status --config %s
  bin/hl7edge send --to %s your-messages.hl7
  bin/hl7edge spool stats --config %s
  bin/hl7edge spool stats --config %s --json
  ls %s
Ctrl-C stops the demo.`, cfgPath, mllpAddr, cfgPath, cfgPath, store)
	if *once {
		stop()
		return <-done
	}
	select {
	case <-ctx.Done():
	case err := <-done:
		return err
	}
	stop()
	return <-done
}

func readFrameTimeout(f *os.File, d time.Duration) ([]byte, error) {
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		fr, err := mllp.NewReader(f, 1<<20).ReadFrame()
		ch <- res{fr.Data, err}
	}()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-time.After(d):
		return nil, fmt.Errorf("no reply within %s", d)
	}
}
