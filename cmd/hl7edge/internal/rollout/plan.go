// Package rollout updates the firmware of many gateways in waves: one
// signed firmware-update per box (device/firmware), canary boxes first,
// each wave started only while failures stay within a threshold, and every
// step kept in a state file so that a rollout survives the end of the
// operator's process (docs/operations.md, "Fleet operations").
package rollout

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetview"
	"github.com/hl7edge/hl7edge/device/firmware"
)

// Box statuses in the state file.
const (
	Pending   = "pending"   // in a wave not started yet
	Sent      = "sent"      // its command id is recorded; the command may or may not have gone out
	Committed = "committed" // the box committed the version
	Failed    = "failed"    // rolled back, refused, or no outcome by the deadline
	Skipped   = "skipped"   // offline when the rollout was planned: nothing sent
	Done      = "done"      // already on the version: nothing sent
)

// Box is one gateway of the rollout.
type Box struct {
	ID        string `json:"id"`
	Wave      int    `json:"wave,omitempty"` // 1-based; 0 for skipped and done boxes
	Canary    bool   `json:"canary,omitempty"`
	Status    string `json:"status"`
	CommandID string `json:"command_id,omitempty"`
	// Expires is the command's expiry, kept with its id so that a resent
	// command is the same command.
	Expires string `json:"expires,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// State is the whole rollout, as the state file holds it.
type State struct {
	Args        firmware.Args `json:"args"`
	Select      string        `json:"select"`
	WaveSpec    string        `json:"waves"`
	MaxSpec     string        `json:"max_failures"`
	Waves       int           `json:"wave_count"`
	MaxFailures int           `json:"max_failures_boxes"`
	// Forgiven is how many failures an operator's --resume took as seen:
	// the threshold counts only the failures after it.
	Forgiven int    `json:"forgiven,omitempty"`
	Stopped  string `json:"stopped,omitempty"`
	Boxes    []Box  `json:"boxes"`
}

// Plan makes a rollout of a to the selected rows: offline boxes skipped,
// boxes on the version done, the rest in waves, canary boxes first.
func Plan(rows []fleetview.Row, a firmware.Args, sel, waves, maxFail string) (*State, error) {
	st := &State{Args: a, Select: sel, WaveSpec: waves, MaxSpec: maxFail}
	var todo []Box
	for _, r := range rows {
		b := Box{ID: r.ID, Canary: r.Labels["ring"] == "canary", Status: Pending}
		switch {
		case r.Version == a.Version:
			b.Status, b.Reason = Done, "already on "+a.Version
		case !r.Online:
			b.Status, b.Reason = Skipped, "offline: nothing sent"
		}
		if b.Status != Pending {
			st.Boxes = append(st.Boxes, b)
			continue
		}
		todo = append(todo, b)
	}
	slices.SortFunc(todo, func(x, y Box) int {
		if x.Canary != y.Canary {
			if x.Canary {
				return -1
			}
			return 1
		}
		return cmp.Compare(x.ID, y.ID)
	})
	ends, err := WaveEnds(waves, len(todo))
	if err != nil {
		return nil, err
	}
	if st.MaxFailures, err = MaxFailures(maxFail, len(todo)); err != nil {
		return nil, err
	}
	st.Waves = len(ends)
	w := 0
	for i := range todo {
		for i >= ends[w] {
			w++
		}
		todo[i].Wave = w + 1
	}
	st.Boxes = append(todo, st.Boxes...)
	return st, nil
}

// WaveEnds reads --waves (1,5%,25%,100%): each item is how many of the n
// boxes have had the update once that wave is over, a count or a share
// (rounded up). Each wave takes at least one box; the last must reach all.
func WaveEnds(spec string, n int) ([]int, error) {
	var ends []int
	prev := 0
	items := strings.Split(spec, ",")
	for i, item := range items {
		k, err := amount(strings.TrimSpace(item), n, math.Ceil)
		if err != nil {
			return nil, fmt.Errorf("--waves %q: %w", spec, err)
		}
		if i == len(items)-1 && k < n {
			return nil, fmt.Errorf("--waves %q: the last wave reaches %d of the %d boxes; end with 100%%", spec, k, n)
		}
		k = min(max(k, prev+1), n)
		if k > prev {
			ends = append(ends, k)
			prev = k
		}
	}
	if n == 0 {
		return nil, nil
	}
	return ends, nil
}

// MaxFailures reads --max-failures (2% or a count) for n boxes: the
// number of failures the rollout goes on with (a share rounds down).
func MaxFailures(spec string, n int) (int, error) {
	k, err := amount(spec, n, math.Floor)
	if err != nil {
		return 0, fmt.Errorf("--max-failures %q: %w", spec, err)
	}
	return k, nil
}

func amount(s string, n int, round func(float64) float64) (int, error) {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f < 0 || f > 100 {
			return 0, fmt.Errorf("%q: use a share from 0%% to 100%% or a count of boxes", s)
		}
		return int(round(f / 100 * float64(n))), nil
	}
	k, err := strconv.Atoi(s)
	if err != nil || k < 0 {
		return 0, fmt.Errorf("%q: use a share from 0%% to 100%% or a count of boxes", s)
	}
	return k, nil
}

// Failures counts the failed boxes after the forgiven ones.
func (st *State) Failures() int {
	n := 0
	for _, b := range st.Boxes {
		if b.Status == Failed {
			n++
		}
	}
	return n - st.Forgiven
}

// Wave lists the indexes of wave w's boxes.
func (st *State) Wave(w int) []int {
	var out []int
	for i, b := range st.Boxes {
		if b.Wave == w {
			out = append(out, i)
		}
	}
	return out
}
