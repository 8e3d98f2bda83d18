package demo

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/creack/pty"

	"github.com/hl7edge/hl7edge/board"
	"github.com/hl7edge/hl7edge/board/sim"
	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

// webService is the reference web service the demo delivers to.
type webService struct {
	url, store string
	close      func()
}

// startWebService serves the reference web service over real TLS with a
// demo CA, and writes the CA and the password where the configuration
// expects them.
func startWebService(dir string) (*webService, error) {
	ca, err := throwawayca.NewCA("hl7edge demo CA")
	if err != nil {
		return nil, fmt.Errorf("demo CA: %w", err)
	}
	leaf, err := ca.Issue("127.0.0.1", "127.0.0.1", "localhost")
	if err != nil {
		return nil, fmt.Errorf("demo certificate: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "demo-ca.pem"), ca.CertPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ehr.pass"), []byte(password+"\n"), 0o600); err != nil {
		return nil, err
	}
	store := filepath.Join(dir, "webservice-store")
	ref, err := refserver.New(refserver.Config{StoreDir: store, Logon: logonID, Password: password})
	if err != nil {
		return nil, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{leaf.TLS}})
	if err != nil {
		ref.Close()
		return nil, fmt.Errorf("web service listener: %w", err)
	}
	hs := &http.Server{Handler: ref, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = hs.Serve(ln)
	}()
	return &webService{
		url:   "https://" + ln.Addr().String(),
		store: store,
		close: func() {
			_ = hs.Close()
			<-served
			ref.Close()
		},
	}, nil
}

// serialLine is a virtual serial port: the gateway opens path (a symlink
// to the pty's device side), the demo plays the device on master.
type serialLine struct {
	path          string
	master, slave *os.File
}

func (l *serialLine) close() {
	_ = l.master.Close()
	_ = l.slave.Close()
}

func openSerial(dir string) (*serialLine, error) {
	master, slave, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("virtual serial port: %w", err)
	}
	l := &serialLine{path: filepath.Join(dir, "ttyDEMO"), master: master, slave: slave}
	_ = os.Remove(l.path)
	if err := os.Symlink(slave.Name(), l.path); err != nil {
		l.close()
		return nil, fmt.Errorf("virtual serial port: %w", err)
	}
	return l, nil
}

// mllpAddress is 127.0.0.1:port when that port is free, else a free one.
func mllpAddress(port int) (string, error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if port != 0 {
		if l, err := net.Listen("tcp", addr); err == nil {
			_ = l.Close()
			return addr, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("no free loopback port for MLLP: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startGateway runs the appliance on the demo configuration with the sim
// board printing LED changes; done receives its result when ctx ends. If it
// does not start, it is stopped (with cancel, which ends ctx) before the
// error returns.
func startGateway(ctx context.Context, cancel context.CancelFunc, o Options, cfgPath string) (<-chan error, error) {
	started := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- appliance.Run(ctx, appliance.Options{
			ConfigPath: cfgPath, Version: o.Version, LogOut: o.Stderr,
			Board: func(_ *config.Config, log *slog.Logger) (board.Board, error) {
				// The LED engine describes each change of meaning; Every
				// only limits an LED that was never described.
				return sim.New(sim.Options{Writer: o.Stdout, Log: log, Every: 10 * time.Second}), nil
			},
			Started: func(*appliance.Box) {
				select {
				case started <- struct{}{}:
				default:
				}
			},
		})
	}()
	select {
	case <-started:
		return done, nil
	case err := <-done:
		if err == nil {
			err = ctx.Err() // stopped before it was up
		}
		if err == nil {
			err = errors.New("it ended without an error")
		}
		return nil, fmt.Errorf("gateway did not start: %w", err)
	case <-time.After(30 * time.Second):
		cancel()
		<-done
		return nil, errors.New("gateway did not start within 30s; its log above says why")
	}
}

// sendSamples sends the MLLP samples and the serial one, printing each ACK.
func sendSamples(ctx context.Context, say func(string, ...any), mllpAddr string, line *serialLine) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var c *mllp.Client
	for c == nil {
		var err error
		if c, err = mllp.Dial(cctx, mllpAddr, nil); err != nil {
			if cctx.Err() != nil {
				return fmt.Errorf("MLLP port %s never opened: %w", mllpAddr, err)
			}
			c = nil
			time.Sleep(50 * time.Millisecond)
		}
	}
	defer c.Close()
	say("sending %d sample messages over MLLP and 1 over the serial line:", len(mllpMessages))
	for _, m := range mllpMessages {
		ack, err := c.Send(cctx, []byte(m))
		if err != nil {
			return fmt.Errorf("MLLP sample: %w", err)
		}
		code, id, _, _ := hl7.ParseACK(ack)
		say("  MLLP   %s -> %s", id, code)
	}
	if err := mllp.WriteFrame(line.master, []byte(serialMessage)); err != nil {
		return fmt.Errorf("serial sample: %w", err)
	}
	ack, err := readFrameTimeout(line.master, 10*time.Second)
	if err != nil {
		return fmt.Errorf("serial ACK: %w", err)
	}
	code, id, _, _ := hl7.ParseACK(ack)
	say("  serial %s -> %s", id, code)
	return nil
}

// showArrivals waits for the samples at the web service (the T message
// went to the rubbish bin) and lists them with their GUIDs.
func showArrivals(say func(string, ...any), dir, store string) error {
	const want = 3
	deadline := time.Now().Add(30 * time.Second)
	var got []refserver.Received
	var archived []string
	// The web service and the file destination are delivered to by their
	// own workers, each at its own pace: wait for both.
	for time.Now().Before(deadline) {
		got, _ = refserver.ReadReceived(store)
		archived, _ = filepath.Glob(filepath.Join(dir, "archive", "*.hl7"))
		if len(got) >= want && len(archived) >= want {
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
	say("  %d copies in the file destination %s", len(archived), filepath.Join(dir, "archive"))
	return nil
}

// readFrameTimeout reads one MLLP frame from the device side of the pty.
// On timeout the reader goroutine ends when the caller closes f.
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
