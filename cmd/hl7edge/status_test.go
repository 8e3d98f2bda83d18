package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/frontpanel"
	"github.com/hl7edge/hl7edge/device/status"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

// statusBase is every case's common part: one MLLP source to send through.
const statusBase = `device: {id: status-gw, board: sim}
spool: {dir: %[1]s/spool, max_bytes: %[3]s}
admin: {socket: %[1]s/admin.sock}
log: {level: debug}
sources:
  - {name: monitors, type: mllp, listen: "127.0.0.1:%[2]d", max_message_bytes: 1MiB}
`

// runStatus runs the real `hl7edge status` and decodes its JSON.
func runStatus(t *testing.T, cfg string) (status.Report, int) {
	t.Helper()
	out, err := exec.Command(binPath, "status", "--config", cfg, "--json").Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var r status.Report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("status --json (exit %d) printed %q: %v", code, out, err)
	}
	return r, code
}

// startWebservice serves the reference web service over TLS with a
// certificate of its own CA; it returns the ping URL and the CA file.
func startWebservice(t *testing.T, dir string, cfg refserver.Config) (url, caFile string) {
	t.Helper()
	ca, err := throwawayca.NewCA("status test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("127.0.0.1", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	files, err := ca.WriteFiles(dir, "ws", leaf)
	if err != nil {
		t.Fatal(err)
	}
	cfg.StoreDir = filepath.Join(dir, "ws-store")
	srv, err := refserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, TLSConfig: &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = hs.Close(); _ = srv.Close() })
	return fmt.Sprintf("https://%s/hl7/ping", ln.Addr()), files.CA
}

func sendMessages(t *testing.T, addr string, n, size int) {
	t.Helper()
	c, err := mllp.Dial(context.Background(), addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pad := strings.Repeat("X", size)
	for i := range n {
		msg := fmt.Appendf(nil, "MSH|^~\\&|A|B|C|D|20261130||ADT^A01|ST%04d|P|2.5.1\rNTE|1||%s\r", i, pad)
		if _, err := c.Send(context.Background(), msg); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
}

// TestStatusInEachFaultState runs the real daemon into each fault the FAULT
// LED knows, for real (a spool filled to 94%, a web service refusing the
// password, a serial adapter that is not there, a certificate nobody
// trusts, a spool directory that can no longer be written), and checks
// that `hl7edge status` names it, says what to do and exits 1.
func TestStatusInEachFaultState(t *testing.T) {
	cases := []struct {
		name  string
		code  frontpanel.Fault
		quota string                                // spool.max_bytes; default 16MiB
		extra func(t *testing.T, dir string) string // sources/destinations YAML appended to statusBase
		act   func(t *testing.T, dir, addr string)  // what makes the fault happen
		words []string                              // in the text output
	}{
		{
			name: "healthy", code: frontpanel.NoFault,
			extra: func(t *testing.T, dir string) string {
				return fmt.Sprintf("destinations:\n  - {name: archive, type: file, dir: %s/archive}\n", dir)
			},
			act: func(t *testing.T, dir, addr string) { sendMessages(t, addr, 3, 100) },
		},
		{
			name: "spool nearly full", code: frontpanel.FaultSpoolFull,
			extra: func(t *testing.T, dir string) string {
				return "destinations:\n  - {name: lis, type: mllp, address: \"127.0.0.1:1\", max_backoff: 1h}\n"
			},
			// 60 messages of 256 KiB are 94% of the 16 MiB quota.
			act:   func(t *testing.T, dir, addr string) { sendMessages(t, addr, 60, 256<<10) },
			words: []string{"FAULT  1 flash, pause  code 1, spool nearly full", "raise spool.max_bytes", "60 messages, 15.0MiB of 16.0MiB (93%)"},
		},
		{
			name: "upstream refusing", code: frontpanel.FaultUpstreamRefusing,
			extra: func(t *testing.T, dir string) string {
				url, ca := startWebservice(t, dir, refserver.Config{Logon: "gw-17", Password: "right"})
				pw := filepath.Join(dir, "ehr.pass")
				if err := os.WriteFile(pw, []byte("wrong\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				return fmt.Sprintf("destinations:\n  - {name: ehr, type: webservice, url: %q, logon_id: gw-17, password_file: %s, ca_file: %s, max_backoff: 1s}\n", url, pw, ca)
			},
			act:   func(t *testing.T, dir, addr string) { sendMessages(t, addr, 1, 100) },
			words: []string{"code 2, upstream refusing: destination ehr", "check logon_id and password_file", "Invalid logon id"},
		},
		{
			name: "serial device missing", code: frontpanel.FaultDeviceMissing,
			extra: func(t *testing.T, dir string) string {
				return fmt.Sprintf("  - {name: analyzer, type: serial, device: %s/ttyGONE, baud: 9600, framing: mllp}\ndestinations:\n  - {name: archive, type: file, dir: %s/archive}\n", dir, dir)
			},
			words: []string{"code 3, serial device missing: source analyzer", "check the cable", "ttyGONE does not exist"},
		},
		{
			name: "TLS failure", code: frontpanel.FaultClockTLS,
			extra: func(t *testing.T, dir string) string {
				url, _ := startWebservice(t, dir, refserver.Config{})
				pw := filepath.Join(dir, "ehr.pass")
				if err := os.WriteFile(pw, []byte("any\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				// No ca_file: the service's certificate is not trusted.
				return fmt.Sprintf("destinations:\n  - {name: ehr, type: webservice, url: %q, logon_id: gw-17, password_file: %s, max_backoff: 1s}\n", url, pw)
			},
			act:   func(t *testing.T, dir, addr string) { sendMessages(t, addr, 1, 100) },
			words: []string{"destination ehr is down", "certificate"},
		},
		{
			name: "storage error", code: frontpanel.FaultStorage, quota: "1GiB",
			extra: func(t *testing.T, dir string) string {
				return "destinations:\n  - {name: lis, type: mllp, address: \"127.0.0.1:1\", max_backoff: 1h}\n"
			},
			act: func(t *testing.T, dir, addr string) {
				// The directory made immutable: Badger can no longer create
				// its next memtable or value log, as when a card fails.
				spool := filepath.Join(dir, "spool")
				if out, err := exec.Command("chattr", "+i", spool).CombinedOutput(); err != nil {
					t.Skipf("chattr +i %s: %v %s (needs root and a file system with attributes)", spool, err, out)
				}
				t.Cleanup(func() { _ = exec.Command("chattr", "-i", spool).Run() })
				c, err := mllp.Dial(context.Background(), addr, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				pad := strings.Repeat("X", 256<<10)
				for i := range 1000 {
					msg := fmt.Appendf(nil, "MSH|^~\\&|A|B|C|D|20261130||ADT^A01|SE%04d|P|2.5.1\rNTE|1||%s\r", i, pad)
					ack, err := c.Send(context.Background(), msg)
					if err != nil || !bytes.Contains(ack, []byte("|AA|")) {
						return // refused: the spool could not write
					}
				}
			},
			words: []string{"code 5, storage error", "check the disk"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			port := freePort(t)
			cfg := filepath.Join(dir, "hl7edge.yaml")
			quota := tc.quota
			if quota == "" {
				quota = "16MiB"
			}
			text := fmt.Sprintf(statusBase, dir, port, quota) + tc.extra(t, dir)
			if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			d := startDaemon(t, cfg, filepath.Join(dir, "admin.sock"), addr)
			defer d.kill()
			if tc.act != nil {
				tc.act(t, dir, addr)
			}
			want := tc.code
			var r status.Report
			var code int
			for deadline := time.Now().Add(60 * time.Second); ; {
				r, code = runStatus(t, cfg)
				got := frontpanel.Fault(r.Fault.Code)
				reached := got == want || (want == frontpanel.NoFault && got == frontpanel.FaultClockTLS && !r.Health.ClockSynced)
				// An unsynchronised clock shows code 4 from the start: the
				// TLS case waits for the failure itself as well.
				if reached && (tc.code != frontpanel.FaultClockTLS || tlsFailed(r)) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("fault code %d, want %d; report %+v\ndaemon log:\n%s", got, want, r, d.tail(30))
				}
				time.Sleep(200 * time.Millisecond)
			}
			out, err := exec.Command(binPath, "status", "--config", cfg).Output()
			text = string(out)
			if !r.Health.ClockSynced {
				// This machine's clock shows code 4 whenever nothing worse holds.
				if want == frontpanel.NoFault || want == frontpanel.FaultClockTLS {
					want = frontpanel.FaultClockTLS
					tc.words = append(tc.words, "code 4, clock not synchronised: check NTP")
				}
			} else if want == frontpanel.FaultClockTLS {
				tc.words = append(tc.words, "code 4, TLS failure: destination ehr")
			}
			if tc.code == frontpanel.FaultClockTLS {
				// Whatever the clock, the TLS failure itself must be counted.
				if !tlsFailed(r) {
					c, _ := r.Health.Component("destination", "ehr")
					t.Errorf("TLS failure not counted: %+v", c)
				}
			}
			if want == frontpanel.NoFault {
				if code != 0 || err != nil || !r.Healthy || !strings.Contains(text, "HEALTHY") {
					t.Fatalf("healthy box: exit %d (%v), report %+v\n%s", code, err, r, text)
				}
			} else {
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 || code != 1 || r.Healthy {
					t.Fatalf("fault %d: exit %v / %d, healthy %v, want exit 1\n%s", want, err, code, r.Healthy, text)
				}
				for _, w := range append(tc.words, "NOT HEALTHY", "firmware dev", fmt.Sprintf("code %d", want)) {
					if !strings.Contains(text, w) {
						t.Errorf("status lacks %q:\n%s", w, text)
					}
				}
			}
			if tc.code == frontpanel.NoFault {
				// No daemon: status cannot tell, and says so with exit 2.
				d.stop()
				out, err := exec.Command(binPath, "status", "--config", cfg).CombinedOutput()
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "not running") {
					t.Errorf("status with the daemon stopped: %v\n%s", err, out)
				}
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("hl7edge status:\n%s", text)
			}
		})
	}
}

// tlsFailed says the web-service destination counted a TLS failure and is down.
func tlsFailed(r status.Report) bool {
	c, ok := r.Health.Component("destination", "ehr")
	return ok && c.Counters["tls_errors"] > 0 && c.State == "down"
}
