package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

const lanesConfig = `device: {id: lanes-gw, board: sim}
spool: {dir: %[1]s/spool, max_bytes: 256MiB}
admin: {socket: %[1]s/admin.sock}
sources:
  - {name: in, type: mllp, listen: "127.0.0.1:%[3]d"}
destinations:
  - name: ehr
    type: webservice
    url: %[2]s/hl7/ping
    logon_id: lanes-gw
    password_file: %[1]s/pw
    ca_file: %[1]s/ws-ca.pem
    allowed_hosts: ["127.0.0.1"]
    max_backoff: 1s
    lanes: 8
`

// TestCrashLanesMidDrain: 800 messages over 40 patients drain through 8
// lanes to the reference web service, which answers every 7th request with
// an EXCEPTION and every 11th with HTTP 500; the real daemon is SIGKILLed
// mid-drain and started again. Every message is stored once under one GUID,
// byte-identical, and every patient's messages first arrived in the order
// they were sent.
func TestCrashLanesMidDrain(t *testing.T) {
	if raceEnabled {
		t.Skip("runs the real binary through a restart; make test runs it without -race")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("lanes-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, _ := throwawayca.NewCA("lanes CA")
	leaf, _ := ca.Issue("127.0.0.1", "127.0.0.1")
	if _, err := ca.WriteFiles(dir, "ws", leaf); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	ref, err := refserver.New(refserver.Config{StoreDir: store, Logon: "lanes-gw", Password: "lanes-secret",
		Faults: refserver.Faults{ExceptionEvery: 7, Status500Every: 11, Delay: 5 * time.Millisecond}})
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

	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfgPath := filepath.Join(dir, "hl7edge.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, lanesConfig, dir, "https://"+ln.Addr().(*net.TCPAddr).String(), port), 0o600); err != nil {
		t.Fatal(err)
	}
	const n, patients = 800, 40
	sent := make([][]byte, n)
	who := make([]int, n)
	for i := range sent {
		who[i] = i % patients
		sent[i] = fmt.Appendf(nil, "MSH|^~\\&|LAB|WARD3|EHR|HOSP|20261130||ORU^R01|LN%04d|P|2.5.1\rPID|1||PAT%03d^^^HOSP^MR\rOBX|1|NM|GLU||%d\r", i, who[i], i)
	}
	d := startDaemon(t, cfgPath, filepath.Join(dir, "admin.sock"), addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := mllp.Dial(ctx, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range sent {
		ack, err := cl.Send(ctx, m)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if code, _, _, err := hl7.ParseACK(ack); err != nil || code != "AA" {
			t.Fatalf("message %d answered %s (%v)", i, code, err)
		}
	}
	_ = cl.Close()
	// Kill once a third of the backlog is stored and lanes are busy.
	deadline := time.Now().Add(time.Minute)
	for ref.Stats().Stored < n/3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d stored after a minute:\n%s", ref.Stats().Stored, d.tail(30))
		}
		time.Sleep(5 * time.Millisecond)
	}
	stats := d.stats()
	d.kill()
	storedAtKill := ref.Stats().Stored
	if l := stats.Destinations["ehr"].Lanes; l == nil || l.Lanes != 8 {
		t.Errorf("spool stats shows ehr's lanes as %+v, want 8 lanes", l)
	}
	d = startDaemon(t, cfgPath, filepath.Join(dir, "admin.sock"), addr)
	deadline = time.Now().Add(90 * time.Second)
	for {
		st := d.stats().Destinations["ehr"]
		if st.Queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ehr still has %d queued after the restart:\n%s", st.Queued, d.tail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.stop()
	rs := ref.Stats()
	t.Logf("killed with %d of %d stored; in all %d posts, %d pings, %d faults injected, %d duplicate posts", storedAtKill, n, rs.Posts, rs.Pings, rs.Faults, rs.Duplicates)
	if rs.Faults == 0 {
		t.Error("no fault was injected")
	}
	checkPatientOrder(t, store, sent, who)
}

// checkPatientOrder reads the reference service's store: every message of
// sent stored once under one GUID, byte-identical, and each patient's
// messages first arrived in sending order.
func checkPatientOrder(t *testing.T, store string, sent [][]byte, who []int) {
	t.Helper()
	index := map[string]int{}
	for i, m := range sent {
		index[wire.ReadMSH(m).ControlID] = i
	}
	recs, err := refserver.ReadReceived(store)
	if err != nil {
		t.Fatal(err)
	}
	guidOf := map[int]string{}
	last := map[int]int{}
	for _, r := range recs {
		i, ok := index[r.ControlID]
		if !ok {
			t.Errorf("received.log names control ID %q, which was never sent", r.ControlID)
			continue
		}
		if r.Duplicate {
			if guidOf[i] != r.GUID {
				t.Errorf("%s: duplicate post of GUID %s before its first arrival", r.ControlID, r.GUID)
			}
			continue
		}
		if g, seen := guidOf[i]; seen {
			t.Errorf("%s stored twice, under %s and %s", r.ControlID, g, r.GUID)
		}
		guidOf[i] = r.GUID
		if prev, seen := last[who[i]]; seen && prev > i {
			t.Errorf("patient %d: %s arrived after %s, but was sent before it", who[i], r.ControlID, wire.ReadMSH(sent[prev]).ControlID)
		}
		last[who[i]] = i
	}
	if len(guidOf) != len(sent) {
		t.Errorf("%d of %d messages stored", len(guidOf), len(sent))
	}
	for i, g := range guidOf {
		b, err := os.ReadFile(filepath.Join(store, g+".hl7"))
		if err != nil || !bytes.Equal(b, sent[i]) {
			t.Errorf("%s: stored copy differs from what was sent (%v)", g, err)
		}
	}
}
