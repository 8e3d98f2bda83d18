package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/storage"
)

// TestUnreadableSpoolThenSalvage walks the recovery policy of
// docs/power-loss.md with the real binary: a spool whose MANIFEST is torn
// does not stop the daemon; it answers AE, `spool stats` shows the cause,
// `spool salvage` refuses to run under it, and once it is stopped the
// salvage brings the queued messages and dead letters back under their
// GUIDs, and their traces as they were.
func TestUnreadableSpoolThenSalvage(t *testing.T) {
	if raceEnabled {
		t.Skip("runs the real binary through restarts; make test runs it without -race")
	}
	dir := t.TempDir()
	port := freePort(t)
	cfgPath := filepath.Join(dir, "hl7edge.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, spoolCLIConfig, dir, port), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	sock := filepath.Join(dir, "admin.sock")
	send := func(id string) string {
		c, err := mllp.Dial(context.Background(), addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ack, err := c.Send(context.Background(), fmt.Appendf(nil, "MSH|^~\\&|A|B|C|D|20261130||ADT^A01|%s|P|2.5.1\r", id))
		if err != nil {
			t.Fatal(err)
		}
		code, _, _, err := hl7.ParseACK(ack)
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	d := startDaemon(t, cfgPath, sock, addr)
	for i := range 3 {
		if code := send(fmt.Sprintf("SALV%d", i)); code != "AA" {
			t.Fatalf("message %d answered %s", i, code)
		}
	}
	for d.stats().Destinations["lis"].Dead < 3 {
		time.Sleep(50 * time.Millisecond)
	}
	d.stop()
	trace := func(id string) string {
		out, err := exec.Command(binPath, "trace", id, "--config", cfgPath, "--json").CombinedOutput()
		if err != nil {
			t.Fatalf("trace %s: %v %s", id, err, out)
		}
		return string(out)
	}
	traced := map[string]string{}
	for i := range 3 {
		id := fmt.Sprintf("SALV%d", i)
		if traced[id] = trace(id); !strings.Contains(traced[id], `"what":"dead","dest":"lis"`) {
			t.Fatalf("trace of %s before the damage: %s", id, traced[id])
		}
	}
	spool := filepath.Join(dir, "spool")
	if err := os.WriteFile(filepath.Join(spool, "MANIFEST"), bytes.Repeat([]byte("torn "), 20), 0o640); err != nil {
		t.Fatal(err)
	}

	d = startDaemon(t, cfgPath, sock, addr)
	if code := send("SALV-AFTER"); code != "AE" {
		t.Fatalf("a daemon with an unreadable spool answered %s, want AE", code)
	}
	out, err := exec.Command(binPath, "spool", "stats", "--config", cfgPath, "--json").Output()
	var st appliance.SpoolReport
	if err != nil || json.Unmarshal(out, &st) != nil || !strings.Contains(st.Error, "unreadable") {
		t.Fatalf("spool stats of an unreadable spool: %v %s", err, out)
	}
	if !strings.Contains(d.logText(), "storage_error") {
		t.Errorf("no storage_error alarm in the log:\n%s", d.tail(20))
	}
	if out, err := exec.Command(binPath, "spool", "salvage", "--config", cfgPath).CombinedOutput(); err == nil || !strings.Contains(string(out), "stop it first") {
		t.Fatalf("salvage under a running daemon: %v %s", err, out)
	}
	d.stop()
	out, err = exec.Command(binPath, "spool", "salvage", "--config", cfgPath, "--json").CombinedOutput()
	var rep storage.SalvageReport
	if err != nil || json.Unmarshal(out, &rep) != nil {
		t.Fatalf("salvage: %v %s", err, out)
	}
	if rep.Queued != 3 || rep.Dead != 3 {
		t.Fatalf("salvage report %+v: want 3 queued (hold) and 3 dead letters (lis)", rep)
	}
	if _, err := os.Stat(filepath.Join(rep.MovedTo, "MANIFEST")); err != nil {
		t.Fatalf("the unreadable spool is not kept: %v", err)
	}
	for id, was := range traced {
		if got := trace(id); got != was {
			t.Errorf("trace of %s after salvage:\n%s\nwant, as before it:\n%s", id, got, was)
		}
	}
	d = startDaemon(t, cfgPath, sock, addr)
	defer d.stop()
	st = d.stats()
	if st.Error != "" || st.Destinations["hold"].Queued != 3 || st.Destinations["lis"].Dead != 3 {
		t.Fatalf("after salvage: %+v", st)
	}
	if code := send("SALV-NEW"); code != "AA" {
		t.Fatalf("after salvage a new message was answered %s", code)
	}
}
