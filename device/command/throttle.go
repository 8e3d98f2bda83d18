package command

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Throttle bounds how often an unsigned remote command may disrupt the
// box: someone holding only the broker's password must not be able to
// restart the pipeline (and reset every sender's connection) ten times a
// second. Signed commands and the local admin socket are not throttled.
// One Throttle lives for the whole process, across pipeline restarts.
type Throttle struct {
	now     func() time.Time
	every   map[string]time.Duration
	refused atomic.Uint64

	mu   sync.Mutex
	last map[string]time.Time
}

// NewThrottle lets each command named in every run unsigned at most once
// per its duration; now may be nil (time.Now).
func NewThrottle(now func() time.Time, every map[string]time.Duration) *Throttle {
	if now == nil {
		now = time.Now
	}
	return &Throttle{now: now, every: every, last: map[string]time.Time{}}
}

// Ran records that what name does happened now, whatever caused it (a
// pipeline start counts as a restart), so the next unsigned one waits.
func (t *Throttle) Ran(name string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.last[name] = t.now()
	t.mu.Unlock()
}

// Allow says why an unsigned name must not run now, or "" when it may,
// in which case it counts as run. Nil allows everything.
func (t *Throttle) Allow(name string) string {
	if t == nil {
		return ""
	}
	every, ok := t.every[name]
	if !ok {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if last, ok := t.last[name]; ok && now.Sub(last) < every {
		t.refused.Add(1)
		return fmt.Sprintf("%s refused: the last took effect %s ago, and unsigned over MQTT it runs at most once per %s because it interrupts intake; "+
			"wait %s, send it signed (hl7edge command sign), or at the box run `sudo systemctl restart hl7edge`",
			name, now.Sub(last).Round(time.Second), every, (every - now.Sub(last)).Round(time.Second))
	}
	t.last[name] = now
	return ""
}

// Refused is how many commands Allow has refused.
func (t *Throttle) Refused() uint64 {
	if t == nil {
		return 0
	}
	return t.refused.Load()
}
