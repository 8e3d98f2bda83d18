package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/logtest"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
	"github.com/hl7edge/hl7edge/storage"
)

// startRef runs the reference web service over TLS for logon "trace-gw",
// writing its CA and the password where the configurations below read
// them; it returns the server and its base URL.
func startRef(t *testing.T, dir string, faults refserver.Faults) (*refserver.Server, string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("trace-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, _ := throwawayca.NewCA("trace CA")
	leaf, _ := ca.Issue("127.0.0.1", "127.0.0.1")
	if _, err := ca.WriteFiles(dir, "ws", leaf); err != nil {
		t.Fatal(err)
	}
	ref, err := refserver.New(refserver.Config{StoreDir: filepath.Join(dir, "store"), Logon: "trace-gw", Password: "trace-secret", Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ref.Close() })
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{leaf.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: ref, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ref, "https://" + ln.Addr().(*net.TCPAddr).String()
}

const traceConfig = `device: {id: trace-gw, board: sim}
spool: {dir: %[1]s/spool, max_bytes: 64MiB, segment_messages: 64%[4]s}
admin: {socket: %[1]s/admin.sock}
sources:
  - {name: in, type: mllp, listen: "127.0.0.1:%[3]d"}
destinations:
  - name: bin
    type: rubbish
    match: {any: ["MSH-11.1 in T"]}
  - name: ehr
    type: webservice
    url: %[2]s/hl7/ping
    logon_id: trace-gw
    password_file: %[1]s/pw
    ca_file: %[1]s/ws-ca.pem
    allowed_hosts: ["127.0.0.1"]
    max_backoff: 1s
    match: {any: ["MSH-9.1 in ORU"]}
  - {name: down, type: mllp, address: "127.0.0.1:1", max_backoff: 1h, match: {any: ["MSH-9.1 in ADT"]}}
  - {name: lis, type: mllp, address: "127.0.0.1:1", max_attempts: 1, max_backoff: 1s, match: {any: ["MSH-9.1 in OML"]}}
`

// traceGW is the real daemon with the trace configuration.
type traceGW struct {
	t    *testing.T
	cfg  string
	addr string
	d    *daemon
}

func startTraceGW(t *testing.T, dir, refURL, spoolExtra string) *traceGW {
	t.Helper()
	port := freePort(t)
	g := &traceGW{t: t, cfg: filepath.Join(dir, "hl7edge.yaml"), addr: fmt.Sprintf("127.0.0.1:%d", port)}
	if err := os.WriteFile(g.cfg, fmt.Appendf(nil, traceConfig, dir, refURL, port, spoolExtra), 0o600); err != nil {
		t.Fatal(err)
	}
	g.d = startDaemon(t, g.cfg, filepath.Join(dir, "admin.sock"), g.addr)
	return g
}

// send sends messages over MLLP and wants AA for each.
func (g *traceGW) send(msgs ...[]byte) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := mllp.Dial(ctx, g.addr, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	defer c.Close()
	for i, m := range msgs {
		ack, err := c.Send(ctx, m)
		if err != nil {
			g.t.Fatalf("message %d: %v", i, err)
		}
		if code, _, _, err := hl7.ParseACK(ack); err != nil || code != "AA" {
			g.t.Fatalf("message %d answered %s (%v)", i, code, err)
		}
	}
}

// cli runs the real binary with the gateway's configuration; it fails the
// test if the output holds message content.
func (g *traceGW) cli(args ...string) (string, error) {
	g.t.Helper()
	out, err := exec.Command(binPath, append(args, "--config", g.cfg)...).CombinedOutput()
	if logtest.Leaks(out) {
		g.t.Fatalf("hl7edge %v printed message content: %s", args, out)
	}
	return string(out), err
}

// trace reads `hl7edge trace ARGS --json`.
func (g *traceGW) trace(args ...string) storage.TraceResult {
	g.t.Helper()
	out, err := g.cli(append([]string{"trace"}, append(args, "--json")...)...)
	if err != nil {
		g.t.Fatalf("trace %v: %v\n%s", args, err, out)
	}
	var res storage.TraceResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		g.t.Fatalf("trace %v --json printed %q", args, out)
	}
	return res
}

// waitTrace waits until the one trace of id satisfies ok.
func (g *traceGW) waitTrace(id, what string, ok func(storage.MessageTrace) bool) storage.MessageTrace {
	g.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		res := g.trace(id)
		if len(res.Messages) == 1 && ok(res.Messages[0]) {
			return res.Messages[0]
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(res)
			g.t.Fatalf("%s: trace of %s never showed it within 60 s: %s\n%s", what, id, b, g.d.tail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sendRaw sends one message and returns its ACK, whatever it says.
func sendRaw(addr string, msg []byte) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := mllp.Dial(ctx, addr, nil)
	if err != nil {
		return "", err
	}
	defer c.Close()
	ack, err := c.Send(ctx, msg)
	return string(ack), err
}

// traceMsg is a message of type typ with control ID ctl and processing ID
// pid ("" for P), carrying logtest.Marker in PID.
func traceMsg(typ, ctl string, pid string) []byte {
	if pid == "" {
		pid = "P"
	}
	return fmt.Appendf(nil, "MSH|^~\\&|LAB|WARD3|EHR|HOSP|20261207||%s|%s|%s|2.5.1\rPID|1||%s^^^HOSP^MR||%s^PATIENT\rOBX|1|NM|GLU||7\r",
		typ, ctl, pid, logtest.Marker, logtest.Marker)
}

func destState(mt storage.MessageTrace, name string) storage.TraceDest {
	for _, d := range mt.Destinations {
		if d.Name == name {
			return d
		}
	}
	return storage.TraceDest{}
}

func eventNames(mt storage.MessageTrace) []string {
	var out []string
	for _, e := range mt.Events {
		out = append(out, e.What)
	}
	return out
}

// TestTraceEveryStateThroughTheBinary: one message in each state a message
// can be in, read with `hl7edge trace` from the real daemon and, once it is
// stopped, from the spool itself. No trace output holds field content but
// MSH-9 and MSH-10 (the messages carry logtest.Marker in PID).
func TestTraceEveryStateThroughTheBinary(t *testing.T) {
	dir := t.TempDir()
	ref, url := startRef(t, dir, refserver.Faults{Status500Every: 1})
	g := startTraceGW(t, dir, url, "")

	// Retried, then delivered: the service answers HTTP 500 until it is healed.
	g.send(traceMsg("ORU^R01", "TR-RETRY", ""))
	g.waitTrace("TR-RETRY", "a failed attempt", func(mt storage.MessageTrace) bool { return destState(mt, "ehr").Attempts >= 1 })
	ref.SetFaults(refserver.Faults{})
	mt := g.waitTrace("TR-RETRY", "retried then delivered", func(mt storage.MessageTrace) bool { return destState(mt, "ehr").State == "delivered" })
	if d := destState(mt, "ehr"); d.Attempts < 2 || d.LastError != "HTTP 500" || d.DeliveredAt == nil {
		t.Errorf("retried then delivered: %+v, want 2+ attempts, last error HTTP 500", d)
	}

	g.send(traceMsg("ORU^R01", "TR-OK", ""), traceMsg("ADT^A01", "TR-DOWN", ""), traceMsg("OML^O21", "TR-DEAD", ""),
		traceMsg("SIU^S12", "TR-UNDELIV", ""), traceMsg("ORU^R01", "TR-BIN", "T"))
	mt = g.waitTrace("TR-OK", "delivered", func(mt storage.MessageTrace) bool { return destState(mt, "ehr").State == "delivered" })
	if !slices.Equal(eventNames(mt), []string{"received", "delivered"}) || mt.Type != "ORU^R01" || mt.ACK != "AA" || mt.Source != "in" {
		t.Errorf("delivered: %+v", mt)
	}
	g.waitTrace("TR-DOWN", "queued behind a down destination", func(mt storage.MessageTrace) bool {
		d := destState(mt, "down")
		return d.State == "queued" && d.Attempts >= 1
	})
	g.waitTrace("TR-DEAD", "dead-lettered", func(mt storage.MessageTrace) bool { return destState(mt, "lis").State == "dead" })
	g.waitTrace("TR-UNDELIV", "undeliverable", func(mt storage.MessageTrace) bool { return mt.Route == "undeliverable" })
	g.waitTrace("TR-BIN", "eaten by the rubbish bin", func(mt storage.MessageTrace) bool { return mt.Route == "rubbish:bin" })

	// Refused (AR): a version no HL7 v2 has. The sender keeps it; the trace says what it was told.
	ack, err := sendRaw(g.addr, []byte("MSH|^~\\&|LAB|WARD3|EHR|HOSP|20261207||ORU^R01|TR-AR|P|9.9\rPID|1||"+logtest.Marker+"\r"))
	if err != nil || !strings.Contains(ack, "MSA|AR|") {
		t.Fatalf("want AR for version 9.9: %q %v", ack, err)
	}
	g.waitTrace("TR-AR", "refused", func(mt storage.MessageTrace) bool { return mt.Route == "refused" && mt.ACK == "AR" })

	// From the dead letters back to the queue (it dies again: max_attempts 1), then purged.
	if out, err := g.cli("spool", "dead", "retry", "--destination", "lis"); err != nil {
		t.Fatalf("dead retry: %v %s", err, out)
	}
	g.waitTrace("TR-DEAD", "retried from the dead letters", func(mt storage.MessageTrace) bool {
		return slices.Contains(eventNames(mt), "retried") && destState(mt, "lis").State == "dead"
	})
	if out, err := g.cli("spool", "dead", "purge", "--destination", "lis"); err != nil {
		t.Fatalf("dead purge: %v %s", err, out)
	}
	// Both failed attempts are in (they are written lazily), so the trace no longer changes.
	g.waitTrace("TR-DEAD", "purged", func(mt storage.MessageTrace) bool {
		d := destState(mt, "lis")
		return d.State == "purged" && d.Attempts == 2
	})

	// Replayed: both delivered ORUs go again under new GUIDs naming their originals.
	out, err := g.cli("replay", "--to", "ehr", "--since", "10m", "--json")
	var rr storage.ReplayResult
	if err != nil || json.Unmarshal([]byte(out), &rr) != nil || rr.Matched != 2 || rr.Replayed != 2 || rr.Missing != 0 {
		t.Fatalf("replay: %v %s", err, out)
	}
	orig, cp := replayedPair(t, g, "TR-OK")
	if cp.GUID == orig.GUID || destState(cp, "ehr").State != "delivered" || !slices.Contains(eventNames(orig), "replayed") {
		t.Errorf("replayed: original %+v, copy %+v", orig, cp)
	}
	got, err := refserver.ReadReceived(filepath.Join(dir, "store"))
	if err != nil || !slices.ContainsFunc(got, func(r refserver.Received) bool { return r.GUID == cp.GUID && r.ControlID == "TR-OK" }) {
		t.Errorf("the service did not receive the copy %s: %v", cp.GUID, err)
	}

	// The daemon stopped, the spool answers the same.
	live, _ := g.cli("trace", "TR-DEAD", "--json")
	g.d.stop()
	if off, err := g.cli("trace", "TR-DEAD", "--json"); err != nil || off != live {
		t.Errorf("trace from the stopped spool:\n%s\nfrom the daemon:\n%s (%v)", off, live, err)
	}
	if out, err := g.cli("trace", "--since", "1h", "--state", "queued"); err != nil || !strings.Contains(out, "TR-DOWN") || strings.Contains(out, "TR-OK") {
		t.Errorf("trace --since 1h --state queued: %v\n%s", err, out)
	}
}

// replayedPair waits until control ID id has an original and a delivered
// replayed copy, and returns both.
func replayedPair(t *testing.T, g *traceGW, id string) (orig, cp storage.MessageTrace) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		res := g.trace(id)
		if len(res.Messages) == 2 {
			orig, cp = res.Messages[0], res.Messages[1]
			if orig.ReplayOf != "" {
				orig, cp = cp, orig
			}
			if cp.ReplayOf == orig.GUID && destState(cp, "ehr").State == "delivered" {
				return orig, cp
			}
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(res)
			t.Fatalf("no delivered replayed copy of %s within 60 s: %s", id, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReplayWindowEndToEnd: 1,000 messages through the real daemon to the
// reference web service; a replay of the window the test marked between the
// 600th and the 900th arrives complete, in order, under new GUIDs whose
// traces name the originals. A dry run changes nothing. With
// retain_max_bytes small the oldest delivered messages have made way, and a
// replay of the whole range is refused with how many are missing.
func TestReplayWindowEndToEnd(t *testing.T) {
	dir := t.TempDir()
	ref, url := startRef(t, dir, refserver.Faults{})
	g := startTraceGW(t, dir, url, ", retain_max_bytes: 128KiB")
	store := filepath.Join(dir, "store")
	batch := func(from, to int) [][]byte {
		var out [][]byte
		for i := from; i < to; i++ {
			out = append(out, traceMsg("ORU^R01", fmt.Sprintf("RP%04d", i), ""))
		}
		return out
	}
	start := time.Now()
	g.send(batch(0, 600)...)
	time.Sleep(20 * time.Millisecond)
	t1 := time.Now()
	g.send(batch(600, 900)...)
	t2 := time.Now()
	time.Sleep(20 * time.Millisecond)
	g.send(batch(900, 1000)...)
	waitStored(t, ref, 1000)
	// Clean-up has let the oldest delivered segments go (retain_max_bytes).
	deadline := time.Now().Add(30 * time.Second)
	for st := g.d.stats(); st.RetainedBytes > 128<<10 || st.RetainedMessages == 0; st = g.d.stats() {
		if time.Now().After(deadline) {
			t.Fatalf("retained %d messages, %d bytes; want some, within 128 KiB", st.RetainedMessages, st.RetainedBytes)
		}
		time.Sleep(100 * time.Millisecond)
	}
	window := []string{"--to", "ehr", "--since", t1.Format(time.RFC3339Nano), "--until", t2.Format(time.RFC3339Nano), "--json"}
	if rr := g.replay(append(window, "--dry-run")...); rr.Matched != 300 || rr.Replayed != 0 || rr.Missing != 0 {
		t.Fatalf("dry run: %+v, want 300 matched, none replayed or missing", rr)
	}
	time.Sleep(500 * time.Millisecond)
	if n := ref.Stats().Stored; n != 1000 || g.d.stats().Destinations["ehr"].Queued != 0 {
		t.Fatalf("after the dry run the service holds %d (want 1000), ehr queued %d", n, g.d.stats().Destinations["ehr"].Queued)
	}
	if rr := g.replay(window...); rr.Matched != 300 || rr.Replayed != 300 {
		t.Fatalf("replay: %+v", rr)
	}
	waitStored(t, ref, 1300)
	checkReplayed(t, g, store, t2)

	// The whole range, its oldest part made way: refused with the count.
	out, err := g.cli("replay", "--to", "ehr", "--since", start.Add(-time.Second).Format(time.RFC3339Nano), "--until", t2.Format(time.RFC3339Nano))
	if err == nil || !strings.Contains(out, "of 900 messages in the range are no longer retained") {
		t.Fatalf("replay of a partly pruned range: %v\n%s", err, out)
	}
	t.Logf("refused: %s", strings.TrimSpace(out))
	rr := g.replay("--to", "ehr", "--since", start.Add(-time.Second).Format(time.RFC3339Nano), "--until", t2.Format(time.RFC3339Nano), "--partial", "--dry-run", "--json")
	if rr.Matched != 900 || rr.Missing == 0 || rr.Missing >= 900 || !strings.Contains(out, fmt.Sprintf("%d of 900", rr.Missing)) {
		t.Fatalf("partial dry run: %+v; refusal said %s", rr, out)
	}
}

func (g *traceGW) replay(args ...string) storage.ReplayResult {
	g.t.Helper()
	out, err := g.cli(append([]string{"replay"}, args...)...)
	var rr storage.ReplayResult
	if err != nil || json.Unmarshal([]byte(out), &rr) != nil {
		g.t.Fatalf("replay %v: %v\n%s", args, err, out)
	}
	return rr
}

func waitStored(t *testing.T, ref *refserver.Server, n uint64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for ref.Stats().Stored < n {
		if time.Now().After(deadline) {
			t.Fatalf("the service stored %d of %d within 2 minutes", ref.Stats().Stored, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkReplayed checks the service's last 300 posts: RP0600 to RP0899 in
// order, each under a GUID not seen before, whose trace names the GUID the
// original was posted under.
func checkReplayed(t *testing.T, g *traceGW, store string, after time.Time) {
	t.Helper()
	got, err := refserver.ReadReceived(store)
	if err != nil || len(got) != 1300 {
		t.Fatalf("received.log: %d lines, %v; want 1300", len(got), err)
	}
	first := map[string]string{} // control ID -> original GUID
	for _, r := range got[:1000] {
		first[r.ControlID] = r.GUID
	}
	res := g.trace("--since", after.Format(time.RFC3339Nano), "--limit", "1000")
	replayOf := map[string]string{} // copy GUID -> original GUID
	for _, m := range res.Messages {
		replayOf[m.GUID] = m.ReplayOf
	}
	for i, r := range got[1000:] {
		want := fmt.Sprintf("RP%04d", 600+i)
		if r.ControlID != want || r.Duplicate || r.GUID == first[want] {
			t.Fatalf("replayed post %d: %s under %s (duplicate %v), want %s under a new GUID (original %s)", i, r.ControlID, r.GUID, r.Duplicate, want, first[want])
		}
		if replayOf[r.GUID] != first[want] {
			t.Fatalf("replayed post %d (%s): trace says replay of %q, want %s", i, r.GUID, replayOf[r.GUID], first[want])
		}
	}
}

// TestTraceSurvivesSIGKILL: the daemon is SIGKILLed while it delivers and
// started again; once the queue has drained every acknowledged message's
// trace has "received" and every one its "delivered".
func TestTraceSurvivesSIGKILL(t *testing.T) {
	if raceEnabled {
		t.Skip("runs the real binary through a restart; make test runs it without -race")
	}
	dir := t.TempDir()
	ref, url := startRef(t, dir, refserver.Faults{Delay: 2 * time.Millisecond})
	g := startTraceGW(t, dir, url, "")
	const n = 400
	var msgs [][]byte
	for i := range n {
		msgs = append(msgs, traceMsg("ORU^R01", fmt.Sprintf("KL%04d", i), ""))
	}
	g.send(msgs...)
	deadline := time.Now().Add(time.Minute)
	for ref.Stats().Stored < n/4 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d stored within a minute", ref.Stats().Stored)
		}
		time.Sleep(2 * time.Millisecond)
	}
	g.d.kill()
	t.Logf("killed with %d of %d stored upstream", ref.Stats().Stored, n)
	g.d = startDaemon(t, g.cfg, filepath.Join(dir, "admin.sock"), g.addr)
	deadline = time.Now().Add(2 * time.Minute)
	for g.d.stats().Destinations["ehr"].Queued > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("ehr still has %d queued after 2 minutes", g.d.stats().Destinations["ehr"].Queued)
		}
		time.Sleep(50 * time.Millisecond)
	}
	res := g.trace("--since", "1h", "--limit", "1000")
	seen := map[string]bool{}
	for _, m := range res.Messages {
		ev := eventNames(m)
		if !slices.Contains(ev, "received") || !slices.Contains(ev, "delivered") || destState(m, "ehr").State != "delivered" {
			t.Errorf("%s: events %v, ehr %+v; want received and delivered", m.ControlID, ev, destState(m, "ehr"))
		}
		seen[m.ControlID] = true
	}
	for i := range n {
		if id := fmt.Sprintf("KL%04d", i); !seen[id] {
			t.Errorf("acknowledged message %s has no trace", id)
		}
	}
}
