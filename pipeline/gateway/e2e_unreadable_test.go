package gateway_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/frontpanel"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

const unreadableYAML = `
spool:
  dir: {{DIR}}/spool
  max_bytes: 64MiB
sources:
  - {name: in, type: mllp, listen: "{{MLLP}}"}
destinations:
  - {name: archive, type: file, dir: "{{DIR}}/out"}
`

// After a cut the spool may not open (here: a MANIFEST Badger cannot read).
// The gateway must not start empty in silence, must not delete anything and
// must not take messages it cannot keep: every message is answered AE, the
// spool's health carries the cause (FAULT 5), a storage_error alarm names
// it, and the spool's files are as they were.
func TestUnreadableSpoolAnswersAEAndKeepsFiles(t *testing.T) {
	r := newRig(t)
	spool := filepath.Join(r.dir, "spool")
	if err := os.MkdirAll(spool, 0o750); err != nil {
		t.Fatal(err)
	}
	garbage := bytes.Repeat([]byte("not a manifest "), 10)
	files := map[string][]byte{"MANIFEST": garbage, "000001.sst": []byte("half a table"), "000002.mem": bytes.Repeat([]byte{7}, 4096)}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(spool, name), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	g := r.startGateway(unreadableYAML, nil)
	c := g.Dial(t)
	defer c.Close()
	m := msgSpec{Control: "UNREAD1"}.build()
	if err := sendExpect(c, m, "AE"); err != nil {
		t.Fatal(err)
	}
	snap := g.Health.Snapshot()
	if !strings.Contains(snap.Spool.Error, "spool is unreadable") || !strings.Contains(snap.Spool.Error, "salvage") {
		t.Fatalf("spool health error %q: want the cause and the way out", snap.Spool.Error)
	}
	if f := frontpanel.FaultOf(snap); f != frontpanel.FaultStorage {
		t.Errorf("FAULT LED shows %v, want %v", f, frontpanel.FaultStorage)
	}
	waitFor(t, 10*time.Second, "the storage_error alarm", func() bool {
		return slices.ContainsFunc(g.Alarms.All(), func(a alarm) bool {
			return a.Kind == health.AlarmStorageError && strings.Contains(a.Detail, "unreadable")
		})
	})
	if g.GW.Spool() != nil || g.GW.SpoolError() == nil {
		t.Fatal("the gateway reports an open spool")
	}
	if _, err := g.GW.DeadLetters("archive"); err == nil {
		t.Fatal("dead letters of an unreadable spool listed without an error")
	}
	g.Stop(t)
	for name, b := range files {
		got, err := os.ReadFile(filepath.Join(spool, name))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s changed or went away (%v): an unreadable spool must be left as it is", name, err)
		}
	}
	if out, _ := os.ReadDir(filepath.Join(r.dir, "out")); len(out) != 0 {
		t.Errorf("file destination holds %d files: nothing may be delivered", len(out))
	}
}
