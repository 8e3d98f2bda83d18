package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/build/skipnote"
)

const fileGatewayConfig = `device: {id: interop-gw, board: sim}
spool: {dir: %[1]s/spool, max_bytes: 256MiB}
admin: {socket: %[1]s/admin.sock}
sources:
  - {name: mllp-in, type: mllp, listen: "127.0.0.1:%[2]d"}
destinations:
  - {name: archive, type: file, dir: %[1]s/archive}
`

// TestMLLPSendInterop has an independent MLLP client, mllp_send from
// Debian's python3-hl7, send 500 messages: each is answered AA for its own
// control ID, and each lands in the file destination byte for byte.
func TestMLLPSendInterop(t *testing.T) {
	mllpSend, err := exec.LookPath("mllp_send")
	if err != nil {
		skipnote.Missing(t, "TestMLLPSendInterop, Debian's independent MLLP client against the daemon", "mllp_send", "python3-hl7")
	}
	dir := t.TempDir()
	port := freePort(t)
	cfgPath := filepath.Join(dir, "hl7edge.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, fileGatewayConfig, dir, port), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, cfgPath, filepath.Join(dir, "admin.sock"), fmt.Sprintf("127.0.0.1:%d", port))
	defer d.stop()

	const n = 500
	var stream bytes.Buffer
	sent := map[string][]byte{}
	for i := range n {
		id := fmt.Sprintf("IOP%05d", i)
		msg := fmt.Appendf(nil, "MSH|^~\\&|PYHL7|LAB|GW|HOSP|20261122120000||ORU^R01^ORU_R01|%s|P|2.5.1\rPID|1||MRN%05d^^^HOSP^MR||TEST^INTEROP\rOBX|1|NM|GLU^Glucose||%d.%d|mmol/L\r", id, i, i%10, i%7)
		sent[id] = msg
		stream.WriteByte(0x0b)
		stream.Write(msg)
		stream.Write([]byte{0x1c, 0x0d})
	}
	in := filepath.Join(dir, "messages.mllp")
	if err := os.WriteFile(in, stream.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(mllpSend, "-p", fmt.Sprint(port), "-f", in, "127.0.0.1").CombinedOutput()
	if err != nil {
		t.Fatalf("mllp_send: %v\n%s", err, out)
	}
	// mllp_send prints each ACK (as Python bytes); read MSA-1 and MSA-2.
	acks := regexp.MustCompile(`MSA\|([A-Z]{2})\|([A-Za-z0-9]+)`).FindAllSubmatch(out, -1)
	if len(acks) != n {
		t.Fatalf("mllp_send printed %d ACKs, want %d", len(acks), n)
	}
	for i, a := range acks {
		if want := fmt.Sprintf("IOP%05d", i); string(a[1]) != "AA" || string(a[2]) != want {
			t.Fatalf("ACK %d is %s for %s, want AA for %s", i, a[1], a[2], want)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for d.stats().Destinations["archive"].Delivered < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d delivered", d.stats().Destinations["archive"].Delivered, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for id, copies := range readArchive(t, filepath.Join(dir, "archive")) {
		if len(copies) != 1 {
			t.Fatalf("control ID %s is in the file destination %d times: %v", id, len(copies), copies)
		}
		if want, ok := sent[id]; !ok || !bytes.Equal(copies[0].Data, want) {
			t.Fatalf("%s.hl7 differs from what was sent as %s", copies[0].GUID, id)
		}
		delete(sent, id)
	}
	if len(sent) != 0 {
		t.Fatalf("%d messages missing from the file destination", len(sent))
	}
	// Patient data never reaches the log: no MRN, no name, no result.
	for _, phi := range []string{"MRN00", "INTEROP", "mmol"} {
		if strings.Contains(d.logText(), phi) {
			t.Fatalf("the daemon's log holds message content %q", phi)
		}
	}
}

// TestDemoRuns is `make demo` in --once mode: the whole flow on loopback.
func TestDemoRuns(t *testing.T) {
	out, err := exec.Command(binPath, "demo", "--once", "--port", strconv.Itoa(freePort(t)), "--dir", t.TempDir()).CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{"DEMO0001 -> AA", "serial DEMO0004 -> AA", "eaten by the tests-bin rubbish bin", "3 copies in the file destination", "try next:"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

// TestConfigCheckNamesLines: a broken file is refused with the line of each mistake.
func TestConfigCheckNamesLines(t *testing.T) {
	bad := `device: {id: gw1, board: sim}
spool: {dir: /tmp/x}
sources:
  - name: mon
    type: mllp
    listen: 127.0.0.1:2575
    max_conections: 5
destinations:
  - name: bin
    type: rubbish
`
	p := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binPath, "config", "check", p).CombinedOutput()
	if err == nil {
		t.Fatalf("config check accepted a broken file:\n%s", out)
	}
	for _, want := range []string{"line 7", "max_conections", "line 9", "would discard every message"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("config check output lacks %q:\n%s", want, out)
		}
	}
}
