package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
	"github.com/hl7edge/hl7edge/storage"
)

const tracePeerConfig = `device: {id: peer-gw, board: sim}
spool: {dir: %[1]s/spool, max_bytes: 64MiB}
admin: {socket: %[1]s/admin.sock}
sources:
  - {name: tcp-in, type: mllp, listen: "127.0.0.1:%[3]d"}
  - {name: pump, type: serial, device: "%[1]s/ttyPEER", baud: 115200, framing: mllp, reopen_interval: 1s}
  - name: orders
    type: webservice
    url: %[2]s/hl7/ping?site=WARD3
    logon_id: peer-gw
    password_file: %[1]s/pw
    ca_file: %[1]s/ws-ca.pem
    allowed_hosts: ["127.0.0.1"]
    frequency: 1s
    max_backoff: 1s
destinations:
  - {name: archive, type: file, dir: %[1]s/out}
`

// TestTracePeerOfEverySourceKind: a message's trace names where it came
// from whatever the source: the sender's address over MLLP, the port for a
// serial source, the web service for a pull source (scheme and host only:
// no path, no query string, no credentials). Read through the real binary.
func TestTracePeerOfEverySourceKind(t *testing.T) {
	dir := t.TempDir()
	mailbox := filepath.Join(dir, "mailbox")
	if err := os.MkdirAll(mailbox, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mailbox, "000001"), traceMsg("ORM^O01", "PEER-PULL", ""), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("peer-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, _ := throwawayca.NewCA("peer CA")
	leaf, _ := ca.Issue("127.0.0.1", "127.0.0.1")
	if _, err := ca.WriteFiles(dir, "ws", leaf); err != nil {
		t.Fatal(err)
	}
	ref, err := refserver.New(refserver.Config{StoreDir: filepath.Join(dir, "store"), MailboxDir: mailbox, Logon: "peer-gw", Password: "peer-secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{leaf.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: ref, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	refURL := "https://" + ln.Addr().(*net.TCPAddr).String()
	line, err := newSoakPTY(filepath.Join(dir, "ttyPEER"))
	if err != nil {
		t.Skipf("SKIPPED: no pseudo-terminal for the serial source: %v", err)
	}
	defer line.close()

	port := freePort(t)
	g := &traceGW{t: t, cfg: filepath.Join(dir, "hl7edge.yaml"), addr: fmt.Sprintf("127.0.0.1:%d", port)}
	if err := os.WriteFile(g.cfg, fmt.Appendf(nil, tracePeerConfig, dir, refURL, port), 0o600); err != nil {
		t.Fatal(err)
	}
	g.d = startDaemon(t, g.cfg, filepath.Join(dir, "admin.sock"), g.addr)
	defer g.d.stop()
	g.send(traceMsg("ORU^R01", "PEER-TCP", ""))
	sendSerial(t, line, traceMsg("ORU^R01", "PEER-SERIAL", ""))
	for id, want := range map[string]string{
		"PEER-TCP":    "127.0.0.1:",
		"PEER-SERIAL": "serial:" + filepath.Join(dir, "ttyPEER"),
		"PEER-PULL":   refURL,
	} {
		mt := g.waitTrace(id, "received", func(storage.MessageTrace) bool { return true })
		exact := !strings.HasSuffix(want, ":")
		if exact && mt.Peer != want || !exact && !strings.HasPrefix(mt.Peer, want) {
			t.Errorf("trace of %s (source %s): peer %q, want %q", id, mt.Source, mt.Peer, want)
		}
	}
}

// sendSerial plays a device speaking MLLP on the serial line until the
// gateway answers AA. The daemon opens the port a moment after it starts:
// until then nothing answers, and the message is offered again.
func sendSerial(t *testing.T, line *soakPTY, msg []byte) {
	t.Helper()
	r := mllp.NewReader(line.m, 64<<10)
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		if err := mllp.WriteFrame(line.m, msg); err != nil {
			time.Sleep(200 * time.Millisecond) // EIO while no one holds the slave
			continue
		}
		_ = line.m.SetReadDeadline(time.Now().Add(3 * time.Second))
		f, err := r.ReadFrame()
		if err != nil {
			continue
		}
		if code, _, _, err := hl7.ParseACK(f.Data); err == nil && code == "AA" {
			return
		}
	}
	t.Fatal("the serial source never answered AA within 2 minutes")
}
