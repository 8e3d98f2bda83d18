package appliance_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/admin"
	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/storage/syncgate"
	"github.com/hl7edge/hl7edge/storage/syncgate/syncgatetest"
)

// TestStateFilesShareTheSpoolsSyncGate: the replay record of signed
// commands and the spool sit on one card, and a flush that fails there
// drops the unsynced writes of both while only its caller hears of it. So
// the appliance hands one set of gates to the gateway and to the state
// writers. A sync that fails while a signed command's id is being recorded
// refuses the command (the record may not hold the id), and the spool
// beside it learns of the same failure and re-opens from disk. The same
// envelope, sent again, runs.
func TestStateFilesShareTheSpoolsSyncGate(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-gate")
	r.writeConfig(r.yaml(r.mllpPort, ""))
	gates := syncgate.NewGates()
	rn := r.start(appliance.Options{Gates: gates})
	op := r.operator(t)
	op.waitOnline(t, 0)
	mustSendHL7(t, r.mllpPort, hl7Message("gate-1"))
	gate, err := gates.For(r.dir) // the state directory: spool.dir's parent
	if err != nil {
		t.Fatal(err)
	}

	// A flush on the card is under way when the signed command comes, and
	// fails once the new replay record is written but not yet synced.
	held, release, other := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		other <- gate.Sync(gate.Epoch(), func() error {
			close(held)
			<-release
			return syscall.EIO
		})
	}()
	<-held
	released := false
	t.Cleanup(func() { // before the appliance stops: its syncs wait for the gate
		if !released {
			close(release)
		}
	})
	exp := time.Now().Add(time.Minute)
	env, err := trust.Seal(trust.Inner{Request: command.Request{ID: "s-gate", Name: command.Health, Expires: &exp}, Device: r.device},
		func(m []byte) ([]byte, error) { return r.signer.Sign(m, "appliance test"), nil })
	if err != nil {
		t.Fatal(err)
	}
	from := op.Log.Mark()
	op.Publish(t, op.base+"cmd/req", false, string(env))
	temp := filepath.Join(r.dir, "."+appliance.ReplayRecord+".tmp-*")
	waitUntil(t, waitLimit, "the replay record's new copy, waiting for the sync gate", func() bool {
		m, _ := filepath.Glob(temp)
		return len(m) > 0
	})
	close(release)
	released = true
	if err := <-other; !errors.Is(err, syscall.EIO) {
		t.Fatalf("the other writer's sync: %v, want EIO", err)
	}
	if a := op.answer(t, from, "s-gate", command.Health); a.Status != command.Rejected || !strings.Contains(a.Detail, "send the same command again") {
		t.Fatalf("signed command whose id may not be on the card: %s, want rejected, saying to send it again", a)
	}

	// The spool shares the gate: its next sync is refused and it re-opens.
	_, _ = sendHL7(t, r.mllpPort, hl7Message("gate-2")) // answered AE or AA, as the re-open falls
	waitUntil(t, waitLimit, "the spool to re-open after the failed sync on its card", func() bool {
		return strings.Contains(rn.logs.String(), "spool re-opened after a failed sync")
	})
	mustSendHL7(t, r.mllpPort, hl7Message("gate-3"))
	if a := op.sendRaw(t, "s-gate", command.Health, env); a.Status != command.Successful {
		t.Fatalf("the same envelope once the card syncs again: %s, want successful", a)
	}
}

// TestConfigApplyWrittenAgainAfterAnotherSyncFailed: the configuration file
// and its trial record sit on the card with the spool. When the spool's
// flush fails while config-apply writes the first of them (the trial
// record), the card may have dropped it though its fsync succeeds: the
// write is refused and made once more (the same writeConfig writes the
// configuration itself), and the apply goes on with files the card holds.
func TestConfigApplyWrittenAgainAfterAnotherSyncFailed(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-gate-apply")
	r.writeConfig(r.yaml(r.mllpPort, ""))
	gates := syncgate.NewGates()
	rn := r.start(appliance.Options{Gates: gates, ApplyGrace: time.Second})
	rn.waitStarts(t, 1)
	gate, err := gates.For(filepath.Dir(r.cfgPath))
	if err != nil {
		t.Fatal(err)
	}
	next := r.yaml(r.mllpPort, "  - name: copy\n    type: file\n    dir: "+r.archive+"/copy\n")
	args, err := json.Marshal(map[string]any{"yaml": next})
	if err != nil {
		t.Fatal(err)
	}
	temp := filepath.Join(filepath.Dir(r.cfgPath), "."+filepath.Base(r.cfgPath)+".trial.tmp-*")
	err = syncgatetest.FailMeanwhile(t, gate, temp, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		resp, err := admin.Call(ctx, r.socket, command.Request{ID: "admin-apply", Name: command.ConfigApply, Args: args})
		if err == nil && resp.Status != command.Successful {
			err = fmt.Errorf("%s: %s", resp.Status, resp.Detail)
		}
		return err
	})
	if err != nil {
		t.Fatalf("config-apply while the spool's flush failed: %v, want applied, its file written again", err)
	}
	if got := r.configFile(); got != next {
		t.Fatalf("the configuration file after the apply:\n%s\nwant the new one", got)
	}
	rn.waitStarts(t, 2)
}
