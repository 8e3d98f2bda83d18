package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

const pullConfig = `device: {id: pull-gw, board: sim}
spool: {dir: %[1]s/spool, max_bytes: 256MiB}
admin: {socket: %[1]s/admin.sock}
sources:
  - name: orders
    type: webservice
    url: %[2]s/hl7/ping
    logon_id: pull-gw
    password_file: %[1]s/pw
    ca_file: %[1]s/ws-ca.pem
    allowed_hosts: ["127.0.0.1"]
    frequency: 1s
    max_backoff: 1s
  - {name: mllp-in, type: mllp, listen: "127.0.0.1:%[3]d"}
destinations:
  - {name: archive, type: file, dir: %[1]s/archive}
`

// TestPullSourceKillBetweenStoreAndAck SIGKILLs the real daemon at the
// moment it acknowledges a message it has just stored, so the web service
// never hears the ack and offers the message again after the restart. The
// message must be acknowledged without being stored twice: every mailbox
// message reaches the file destination exactly once, under one GUID.
func TestPullSourceKillBetweenStoreAndAck(t *testing.T) {
	if raceEnabled {
		t.Skip("runs the real binary through restarts; make test runs it without -race")
	}
	dir := t.TempDir()
	mailbox := filepath.Join(dir, "mailbox")
	if err := os.MkdirAll(mailbox, 0o750); err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n {
		msg := fmt.Sprintf("MSH|^~\\&|HIS|HOSP|GW|WARD3|20261122||ORM^O01|ORD%04d|P|2.5.1\rPID|1||MRN%04d\rORC|NW|ORD%04d\r", i, i, i)
		if err := os.WriteFile(filepath.Join(mailbox, fmt.Sprintf("%06d", i)), []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("pull-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, _ := throwawayca.NewCA("pull CA")
	leaf, _ := ca.Issue("127.0.0.1", "127.0.0.1")
	if _, err := ca.WriteFiles(dir, "ws", leaf); err != nil {
		t.Fatal(err)
	}
	ref, err := refserver.New(refserver.Config{StoreDir: filepath.Join(dir, "store"), MailboxDir: mailbox, Logon: "pull-gw", Password: "pull-secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()

	// Every 7th ack kills the gateway before the service processes it.
	var mu sync.Mutex
	var d *daemon
	acks, kills := 0, 0
	killed := make(chan struct{}, 1)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if el, err := wire.Parse(body); err == nil && strings.EqualFold(el.Name, "HL7ACK") {
			mu.Lock()
			acks++
			kill := acks%7 == 3
			cur := d
			mu.Unlock()
			alive := cur != nil
			if alive {
				select {
				case <-cur.exited: // killed already; its successor is still starting
					alive = false
				default:
				}
			}
			if kill && alive {
				cur.kill()
				mu.Lock()
				kills++
				mu.Unlock()
				killed <- struct{}{}
				http.Error(w, "gateway gone", http.StatusInternalServerError)
				return
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		ref.ServeHTTP(w, r)
	})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{leaf.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	port := freePort(t)
	cfgPath := filepath.Join(dir, "hl7edge.yaml")
	url := "https://" + ln.Addr().(*net.TCPAddr).String()
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, pullConfig, dir, url, port), 0o600); err != nil {
		t.Fatal(err)
	}
	start := func() {
		nd := startDaemon(t, cfgPath, filepath.Join(dir, "admin.sock"), fmt.Sprintf("127.0.0.1:%d", port))
		mu.Lock()
		d = nd
		mu.Unlock()
	}
	start()
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-killed:
			start()
			continue
		case <-time.After(200 * time.Millisecond):
		}
		left, _ := os.ReadDir(mailbox)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still in the mailbox after 90s", len(left))
		}
	}
	mu.Lock()
	cur := d
	mu.Unlock()
	for cur.stats().Destinations["archive"].Queued > 0 {
		time.Sleep(100 * time.Millisecond)
	}
	st := cur.stats()
	cur.stop()

	src := st.Sources["orders"]
	// Counters are per process; the last one was started right after a
	// kill, so it saw the unacknowledged message offered again.
	if src.State != "up" || src.Counters["polls"] == 0 || src.Counters["duplicates"] == 0 {
		t.Errorf("spool stats shows the pull source as %+v; want up, with polls and the re-offered duplicate counted", src)
	}
	guids := readArchive(t, filepath.Join(dir, "archive"))
	for i := range n {
		id := fmt.Sprintf("ORD%04d", i)
		if len(guids[id]) != 1 {
			t.Errorf("%s reached the destination %d times (%v), want once", id, len(guids[id]), guids[id])
		}
	}
	t.Logf("%d mailbox messages, %d acks, %d SIGKILLs between store and ack, %d control IDs delivered, source counters %v",
		n, acks, kills, len(guids), src.Counters)
	if kills == 0 {
		t.Fatal("no kill happened between store and ack")
	}
}
