package appliance_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/board"
	"github.com/hl7edge/hl7edge/board/sim"
	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/config"
)

// A configuration that cannot start is rolled back by writing the previous
// one again. When that write fails too (the card refuses writes, its
// directory gone), the daemon stops, and the next start runs whatever the
// file holds: the log must say the roll-back failed and why, not only why
// the new configuration could not start.
func TestFailedRollbackIsLogged(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-rbfail")
	etc := filepath.Join(r.dir, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	r.cfgPath = filepath.Join(etc, "hl7edge.yaml")
	r.writeConfig(r.yaml(r.mllpPort, ""))
	var builds atomic.Int32
	building, release := make(chan struct{}), make(chan struct{})
	rn := r.start(appliance.Options{Board: func(*config.Config, *slog.Logger) (board.Board, error) {
		if builds.Add(1) == 1 {
			return sim.New(sim.Options{}), nil
		}
		close(building)
		<-release
		return nil, errors.New("the test's board refuses to open")
	}})
	rn.waitStarts(t, 1)
	if a := r.adminCall(t, command.ConfigApply, map[string]any{"yaml": "# new\n" + r.yaml(r.mllpPort, "")}); a.Status != command.Successful {
		t.Fatalf("config-apply: %s", a)
	}
	select {
	case <-building:
	case <-time.After(waitLimit):
		close(release)
		t.Fatal("the new configuration's box was not built")
	}
	// The directory of the configuration file goes away: no file can be
	// written there any more.
	if err := os.Rename(etc, etc+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(etc, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	close(release)
	var err error
	select {
	case err = <-rn.done:
		close(rn.done) // the cleanup's stop has nothing left to wait for
	case <-time.After(waitLimit):
		t.Fatal("Run did not stop after the roll-back failed")
	}
	if err == nil {
		t.Fatal("Run returned nil after a configuration that cannot start could not be rolled back")
	}
	for _, want := range []string{"admin-config-apply", "refuses to open", "putting the previous one back failed", "not a directory", r.cfgPath} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the daemon's last error does not say %q: %v", want, err)
		}
	}
	if !strings.Contains(rn.logs.String(), "putting the previous one back failed") {
		t.Error("the log does not say the roll-back failed")
	}
}
