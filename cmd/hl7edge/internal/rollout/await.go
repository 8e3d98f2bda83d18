package rollout

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/firmware"
)

// await waits until every box of the wave has committed or failed, or the
// deadline, saving the state at each outcome and printing progress.
func (r *Runner) await(ctx context.Context, st *State, w int, idx []int, answers map[int]<-chan command.Response, resent map[int]bool) error {
	deadline := time.NewTimer(r.Deadline)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	shown, shownAt := -1, time.Time{}
	for {
		changed := false
		for _, i := range idx {
			changed = r.judge(st, i, answers, resent) || changed
		}
		if changed {
			if err := st.Save(r.StatePath); err != nil {
				return fmt.Errorf("state file: %w", err)
			}
		}
		done, failed := r.progress(st, idx)
		// A line per change, at most one a second but always the last: a
		// thousand boxes must not scroll the answer away.
		if done != shown && (done == len(idx) || time.Since(shownAt) >= time.Second) {
			fmt.Fprintf(r.Out, "wave %d/%d %s %d/%d (%d failed)\n", w, st.Waves, bar(done, len(idx)), done, len(idx), failed)
			shown, shownAt = done, time.Now()
		}
		if done == len(idx) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.watch.changed:
		case <-tick.C:
		case <-deadline.C:
			for _, i := range idx {
				if b := &st.Boxes[i]; b.Status == Sent {
					b.Status, b.Reason = Failed, r.lateReason(b)
				}
			}
			if err := st.Save(r.StatePath); err != nil {
				return fmt.Errorf("state file: %w", err)
			}
			done, failed := r.progress(st, idx)
			fmt.Fprintf(r.Out, "wave %d/%d %s %d/%d (%d failed) at --deadline %s\n", w, st.Waves, bar(done, len(idx)), done, len(idx), failed, r.Deadline)
			return nil
		}
	}
}

// judge gives box i its outcome when one is known; it says whether it did.
// The box's retained firmware state for this command decides; a refusal
// on cmd/res decides too, except for a command sent again after a kill,
// which a box that had it refuses as used (its firmware state then tells).
func (r *Runner) judge(st *State, i int, answers map[int]<-chan command.Response, resent map[int]bool) bool {
	b := &st.Boxes[i]
	if b.Status != Sent {
		return false
	}
	if p, ok := r.watch.get(b.ID); ok && p.Command == b.CommandID {
		switch p.State {
		case firmware.Committed:
			b.Status, b.Reason = Committed, ""
			return true
		case firmware.RolledBack, firmware.Rejected:
			b.Status, b.Reason = Failed, string(p.State)+": "+p.Reason
			return true
		}
	}
	select {
	case res := <-answers[i]:
		if res.Status != command.Successful && !resent[i] {
			b.Status, b.Reason = Failed, fmt.Sprintf("%s: %s", res.Status, res.Detail)
			return true
		}
	default:
	}
	return false
}

func (r *Runner) lateReason(b *Box) string {
	last := "no answer and no firmware state"
	if p, ok := r.watch.get(b.ID); ok && p.Command == b.CommandID {
		last = "last state " + string(p.State)
	}
	return fmt.Sprintf("no outcome within --deadline %s (%s)", r.Deadline, last)
}

func (r *Runner) progress(st *State, idx []int) (done, failed int) {
	for _, i := range idx {
		switch st.Boxes[i].Status {
		case Committed, Done:
			done++
		case Failed:
			done++
			failed++
		}
	}
	return done, failed
}

// bar is a 20-character progress bar.
func bar(done, n int) string {
	k := 20
	if n > 0 {
		k = done * 20 / n
	}
	return "[" + strings.Repeat("#", k) + strings.Repeat(".", 20-k) + "]"
}
