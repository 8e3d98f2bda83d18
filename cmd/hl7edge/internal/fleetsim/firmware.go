package fleetsim

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/firmware"
)

// SimTrial is how long a simulated gateway's new version is on trial
// before it commits or rolls back.
const SimTrial = 200 * time.Millisecond

// firmwareSim is a gateway's firmware updates: the retained firmware
// states a daemon publishes (docs/mqtt-api.md), without a download or a
// restart, so that a thousand of them fit in one test process.
type firmwareSim struct {
	ctx context.Context
	wg  sync.WaitGroup

	mu      sync.Mutex
	running string // the version running now ("" = Spec.Version)
	busy    bool
}

// firmwareUpdate answers like the daemon: trial now, then committed or
// rolled_back (Spec.FirmwareFail) after SimTrial.
func (g *Gateway) firmwareUpdate(ctx context.Context, raw json.RawMessage) (any, string, error) {
	var a firmware.Args
	if err := json.Unmarshal(raw, &a); err != nil || a.Version == "" || len(a.SHA256) != 64 || a.Minisig == "" {
		return nil, "", errors.New("args: want url, version, sha256 (64 hex digits) and minisig")
	}
	f := &g.fw
	f.mu.Lock()
	defer f.mu.Unlock()
	prev := f.running
	if prev == "" {
		prev = g.Spec.Version
	}
	if f.busy {
		return nil, "", errors.New("an update is under way; wait for its end")
	}
	f.busy = true
	id := command.IDFrom(ctx)
	trial := firmware.Public{State: firmware.Trial, Version: a.Version, Previous: prev, Reason: "on trial", Command: id, Updated: time.Now().UTC(), Running: prev}
	g.publishFirmware(trial)
	f.wg.Go(func() {
		select {
		case <-f.ctx.Done():
			return
		case <-time.After(cmp.Or(g.Spec.Trial, SimTrial)):
		}
		end := trial
		end.Updated = time.Now().UTC()
		f.mu.Lock()
		f.busy = false
		if g.Spec.FirmwareFail {
			end.State, end.Running = firmware.RolledBack, prev
			end.Reason = fmt.Sprintf("%s was unhealthy at the end of its trial: destination ehr down; %s runs again", a.Version, prev)
		} else {
			end.State, end.Running = firmware.Committed, a.Version
			end.Reason = "healthy for its trial; kept"
			f.running = a.Version
		}
		f.mu.Unlock()
		g.publishFirmware(end)
	})
	return trial, "", nil
}

func (g *Gateway) publishFirmware(p firmware.Public) {
	if b, err := json.Marshal(p); err == nil {
		g.agent.Retain("firmware", b)
	}
}
