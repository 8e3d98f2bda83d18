package appliance_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestRegressions holds the checks that found defects, now fixed; each
// asserts the right behaviour so the defect cannot come back.
func TestRegressions(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-bugs")
	r.writeConfig(r.yaml(r.mllpPort, ""))
	op := r.operator(t)
	rn := r.start(appliance.Options{})
	op.waitOnline(t, 0)
	op.waitState(t, health.Source, "in", health.Up)

	// An operator who mistypes a destination must be told, as dead-retry
	// and dead-purge do, not shown an empty list.
	t.Run("dead-list of an unknown destination", func(t *testing.T) {
		a := op.send(t, command.DeadList, map[string]any{"name": "nosuch"})
		if a.Status == command.Successful {
			t.Fatalf("%s: dead-list of a destination that does not exist answers successful with an empty list "+
				"(device/appliance/commands.go, command.DeadList handler, calls gw.Spool().DeadLetters(n) without checking the name; "+
				"dead-retry/dead-purge check it through gateway.RetryDead/PurgeDead)", a)
		}
		if a.Status != command.Failed || !strings.Contains(a.Detail, "nosuch") {
			t.Errorf("%s: want failed naming nosuch", a)
		}
	})

	// A configuration that passes validation but cannot be built (here a
	// file destination whose directory cannot exist) is rolled back by Run;
	// the operator who sent it must hear so on MQTT, as after a failed
	// grace period.
	t.Run("an unstartable configuration is rolled back with an alarm", func(t *testing.T) {
		old := r.configFile()
		// Under the archive, where a remote change may put a file destination.
		blocker := filepath.Join(r.archive, "not-a-dir")
		if err := os.WriteFile(blocker, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		broken := r.yaml(r.mllpPort, "  - name: broken\n    type: file\n    dir: "+filepath.Join(blocker, "sub")+"\n")
		from := op.Log.Mark()
		op.must(t, command.ConfigApply, map[string]any{"yaml": broken, "grace": "1s"})
		rn.waitStarts(t, 2)
		if got := r.configFile(); got != old {
			t.Fatalf("after the failed start the file is not the old configuration:\n%s", got)
		}
		op.waitOnline(t, from)
		deadline := time.Now().Add(3 * time.Second)
		for !slices.Contains(op.alarms(from), "config_rolled_back") {
			if time.Now().After(deadline) {
				t.Fatalf("a configuration that fails to start is rolled back silently: alarms since apply %v, no config_rolled_back. "+
					"device/appliance/appliance.go Run: when runOnce returns an error, rollback() restores the file and only prints to LogOut; "+
					"no alarm is raised because the new box's agent never ran and the restored box does not know. "+
					"Fix: have rollback record the cause, and raise config_rolled_back from the next runOnce once its agent runs (the MQTT outbox keeps alarms until connected)",
					op.alarms(from))
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	// Run last: while the defect is present the source never comes back.
	t.Run("pause and resume an MLLP source", func(t *testing.T) {
		op.must(t, command.Pause, map[string]any{"name": "in"})
		op.waitState(t, health.Source, "in", health.Paused)
		waitUntil(t, waitLimit, "the paused source to stop listening", func() bool {
			_, err := sendHL7(t, r.mllpPort, hl7Message("CTRL-REFUSED"))
			return err != nil
		})
		op.must(t, command.Resume, map[string]any{"name": "in"})
		var c health.ComponentSnapshot
		deadline := time.Now().Add(waitLimit)
		for {
			s := op.health(t)
			c, _ = s.Component(health.Source, "in")
			if c.State == health.Up {
				break
			}
			if c.State == health.Down && strings.Contains(c.LastError, "Serve called twice") {
				t.Fatalf("a resumed MLLP source never listens again: source in is %s with %q. "+
					"pipeline/gateway/gateway.go superviseSource calls s.r.Run again on the same *mllp.Server, "+
					"whose Serve may be called once (pipeline/mllp/server.go, started.CompareAndSwap). "+
					"The same defect stops a source from recovering after Serve fails. "+
					"Fix: keep a constructor in sourceSlot and build a fresh runner per run, or let Server.Serve run again after it returned", c.State, c.LastError)
			}
			if time.Now().After(deadline) {
				t.Fatalf("source in is %q (%s) %s after resume, want up", c.State, c.LastError, waitLimit)
			}
			time.Sleep(50 * time.Millisecond)
		}
		mustSendHL7(t, r.mllpPort, hl7Message("CTRL-RESUMED-1"))
	})
}
