package trust_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/storage/syncgate"
	"github.com/hl7edge/hl7edge/storage/syncgate/syncgatetest"
)

// The replay record lives beside the spool. When the spool's flush fails
// while the record's new copy is written, the card may have dropped it
// though its own fsync succeeds: the id may not be on the card, so the
// command must not run (else after a power cut it could run again). The
// same envelope runs once the card syncs again, and only once.
func TestSignedCommandRefusedWhenAnotherSyncFailsMeanwhile(t *testing.T) {
	r := newGatedRecord(t)
	dir, used, gate, g, env := r.dir, r.used, r.gate, r.g, r.env
	err := syncgatetest.FailMeanwhile(t, gate, filepath.Join(dir, ".signed-commands.json.tmp-*"), func() error {
		_, _, err := g.Open(env)
		return err
	})
	if !errors.Is(err, syncgate.ErrFailedSince) {
		t.Fatalf("Open while the spool's flush failed = %v, want a refusal wrapping ErrFailedSince", err)
	}
	for _, want := range []string{"nothing ran", used, "send the same command again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %q", err, want)
		}
	}
	if _, err := os.Stat(used); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the replay record after a refused write: %v, want none (nothing was recorded)", err)
	}
	if req, _, err := g.Open(env); err != nil || req.ID != "c1" {
		t.Fatalf("the same envelope once the card syncs again: %+v, %v", req, err)
	}
	if _, _, err := g.Open(env); !errors.Is(err, trust.ErrReplay) {
		t.Fatalf("the envelope a second time: %v, want ErrReplay", err)
	}
}

// Forget gives back the id of a command that did not run. When the
// record cannot be written the file may still hold the id, so it stays
// used here too: a resend is refused, never obeyed twice after a restart.
func TestForgetKeepsTheIDWhenTheRecordIsNotWritten(t *testing.T) {
	r := newGatedRecord(t)
	keys, dir, used, gates, gate, g, env := r.keys, r.dir, r.used, r.gates, r.gate, r.g, r.env
	if _, _, err := g.Open(env); err != nil {
		t.Fatal(err)
	}
	err := syncgatetest.FailMeanwhile(t, gate, filepath.Join(dir, ".signed-commands.json.tmp-*"), func() error { return g.Forget("c1") })
	if !errors.Is(err, syncgate.ErrFailedSince) || !strings.Contains(err.Error(), "stays used") {
		t.Fatalf("Forget while the spool's flush failed: %v, want an error saying the id stays used", err)
	}
	for _, gg := range []*trust.Gate{g, trust.NewGate(keys, "gw-1", used, gates, nil)} {
		if _, _, err := gg.Open(env); !errors.Is(err, trust.ErrReplay) {
			t.Fatalf("the envelope after a Forget that was not written: %v, want ErrReplay", err)
		}
	}
	if err := g.Forget("c1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := trust.NewGate(keys, "gw-1", used, gates, nil).Open(env); err != nil {
		t.Fatalf("the envelope after its id was given back, read anew from the record: %v", err)
	}
}

// gatedRecord is a trust gate whose replay record shares a sync gate the
// test holds, and a signed envelope for command c1 to open with it.
type gatedRecord struct {
	keys  *trust.Keys
	dir   string
	used  string
	gates *syncgate.Gates
	gate  *syncgate.Gate
	g     *trust.Gate
	env   []byte
}

func newGatedRecord(t *testing.T) *gatedRecord {
	t.Helper()
	s, pub, err := trust.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := trust.ParseKeys([]string{pub})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	used := filepath.Join(dir, "signed-commands.json")
	gates := syncgate.NewGates()
	gate, err := gates.For(dir)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(10 * time.Minute)
	env, err := trust.Seal(trust.Inner{Request: command.Request{ID: "c1", Name: "restart", Expires: &exp}, Device: "gw-1"},
		func(m []byte) ([]byte, error) { return s.Sign(m, "test"), nil })
	if err != nil {
		t.Fatal(err)
	}
	return &gatedRecord{keys: keys, dir: dir, used: used, gates: gates, gate: gate, g: trust.NewGate(keys, "gw-1", used, gates, nil), env: env}
}
