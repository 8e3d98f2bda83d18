package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetcmd"
	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetview"
	"github.com/hl7edge/hl7edge/device/atomicfile"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/firmware"
)

// CommandValidity is how long each box's command stays valid: long enough
// for a --resume the next morning to send the same command again, and
// well inside the boxes' 24-hour limit, so that a box whose clock runs a
// little behind the operator's does not refuse it as too far ahead.
const CommandValidity = 12 * time.Hour

// ErrStopped says the rollout stopped on its failure threshold.
var ErrStopped = errors.New("rollout stopped")

// Runner carries a rollout out over one MQTT connection.
type Runner struct {
	Link      *fleetcmd.Link
	Sign      fleetcmd.Signer
	StatePath string
	Deadline  time.Duration // per wave, from its start
	Out       io.Writer     // progress lines
	watch     *watcher
}

// Save writes the state file atomically: after a power cut or a kill it
// holds either the state before or the state after, never half of each.
func (st *State) Save(path string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(nil, path, append(b, '\n'), 0o600)
}

// Load reads a state file.
func Load(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st := &State{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return st, nil
}

// watcher keeps each box's latest retained firmware state.
type watcher struct {
	mu      sync.Mutex
	latest  map[string]firmware.Public
	changed chan struct{}
}

// Watch subscribes to every box's firmware topic; call it before Run.
func (r *Runner) Watch(ctx context.Context, client mqtt.Client, topicRoot string) error {
	w := &watcher{latest: map[string]firmware.Public{}, changed: make(chan struct{}, 1)}
	onState := func(_ mqtt.Client, m mqtt.Message) {
		parts := strings.Split(m.Topic(), "/")
		var p firmware.Public
		if len(parts) < 3 || json.Unmarshal(m.Payload(), &p) != nil {
			return
		}
		w.mu.Lock()
		w.latest[parts[len(parts)-2]] = p
		w.mu.Unlock()
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
	// A refused subscription must stop the rollout here: unseen, it would
	// read as every box silent until --deadline failed the whole wave.
	if err := fleetview.Subscribe(ctx, client, map[string]byte{topicRoot + "/+/firmware": 1}, onState); err != nil {
		return fmt.Errorf("firmware states: %w", err)
	}
	r.watch = w
	return nil
}

func (w *watcher) get(id string) (firmware.Public, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p, ok := w.latest[id]
	return p, ok
}

// Run carries st on from where it stands: the wave under way (after a
// kill) or the next one, until every wave is over or the failures exceed
// the threshold (ErrStopped).
func (r *Runner) Run(ctx context.Context, st *State) error {
	for w := 1; w <= st.Waves; w++ {
		idx := st.Wave(w)
		if allFinal(st, idx) {
			continue
		}
		if f := st.Failures(); f > st.MaxFailures {
			return r.stop(st, w-1)
		}
		fmt.Fprintf(r.Out, "wave %d/%d: %s\n", w, st.Waves, Count(len(idx), "box", "boxes"))
		if err := r.runWave(ctx, st, w, idx); err != nil {
			return err
		}
		if st.Failures() > st.MaxFailures {
			return r.stop(st, w)
		}
	}
	fmt.Fprintf(r.Out, "rollout of %s complete: %s\n", st.Args.Version, st.Summary())
	return nil
}

func allFinal(st *State, idx []int) bool {
	for _, i := range idx {
		if s := st.Boxes[i].Status; s == Pending || s == Sent {
			return false
		}
	}
	return true
}

// stop records and prints why the rollout stopped after wave w.
func (r *Runner) stop(st *State, w int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "stopped after wave %d of %d: %s, more than --max-failures %s allows (%d)", w, st.Waves, Count(st.Failures(), "failure", "failures"), st.MaxSpec, st.MaxFailures)
	st.Stopped = b.String()
	if err := st.Save(r.StatePath); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	fmt.Fprintln(r.Out, st.Stopped)
	for _, x := range st.Boxes {
		if x.Status == Failed {
			fmt.Fprintf(r.Out, "  %s (wave %d): %s\n", x.ID, x.Wave, x.Reason)
		}
	}
	untouched := 0
	for _, x := range st.Boxes {
		if x.Status == Pending {
			untouched++
		}
	}
	fmt.Fprintf(r.Out, "%s untouched. Fix the cause, then continue with: hl7edge fleet update --resume %s\n", Count(untouched, "box", "boxes"), r.StatePath)
	return ErrStopped
}

// Summary counts the boxes by status.
func (st *State) Summary() string {
	counts := map[string]int{}
	for _, b := range st.Boxes {
		counts[b.Status]++
	}
	var parts []string
	for _, s := range []string{Committed, Done, Failed, Skipped, Sent, Pending} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	return strings.Join(parts, ", ")
}

// runWave sends to the wave's boxes and waits until each has an outcome.
// Every box's command id is in the state file before anything is sent, so
// that after a kill the same command (same id) is sent again, never a
// second one.
func (r *Runner) runWave(ctx context.Context, st *State, w int, idx []int) error {
	resent := map[int]bool{}
	for _, i := range idx {
		b := &st.Boxes[i]
		switch b.Status {
		case Pending:
			b.Status, b.CommandID = Sent, fleetcmd.NewID(b.ID)
			b.Expires = time.Now().Add(CommandValidity).UTC().Truncate(time.Second).Format(time.RFC3339)
		case Sent:
			resent[i] = true
		}
	}
	if err := st.Save(r.StatePath); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	answers := map[int]<-chan command.Response{}
	for _, i := range idx {
		b := st.Boxes[i]
		if b.Status != Sent {
			continue
		}
		if p, ok := r.watch.get(b.ID); ok && p.Command == b.CommandID {
			continue // it has it: its firmware state says so
		}
		ch, err := r.send(ctx, st, b)
		if err != nil {
			return fmt.Errorf("send to %s: %w", b.ID, err)
		}
		answers[i] = ch
	}
	return r.await(ctx, st, w, idx, answers, resent)
}

func (r *Runner) send(ctx context.Context, st *State, b Box) (<-chan command.Response, error) {
	exp, err := time.Parse(time.RFC3339, b.Expires)
	if err != nil {
		return nil, fmt.Errorf("state file: expiry of %s: %w", b.ID, err)
	}
	args, err := json.Marshal(st.Args)
	if err != nil {
		return nil, err
	}
	req := command.Request{ID: b.CommandID, Name: command.FirmwareUpdate, Args: args, Expires: &exp}
	return r.Link.Send(ctx, b.ID, req, r.Sign)
}

// Count is "1 box", "2 boxes".
func Count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
