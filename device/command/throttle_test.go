package command

import (
	"strings"
	"testing"
	"time"
)

// TestThrottle: a throttled command runs once per its interval, a start
// recorded with Ran counts as one, refusals say when to try again and are
// counted, and other commands are not touched.
func TestThrottle(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	th := NewThrottle(func() time.Time { return now }, map[string]time.Duration{Restart: 10 * time.Minute})
	th.Ran(Restart)
	now = now.Add(4 * time.Minute)
	why := th.Allow(Restart)
	if !strings.Contains(why, "4m0s ago") || !strings.Contains(why, "wait 6m0s") {
		t.Errorf("restart 4 min after a start: %q; want refused with the time to wait", why)
	}
	if why := th.Allow(Identify); why != "" {
		t.Errorf("identify throttled: %q", why)
	}
	now = now.Add(6 * time.Minute)
	if why := th.Allow(Restart); why != "" {
		t.Errorf("restart 10 min after a start refused: %q", why)
	}
	if why := th.Allow(Restart); why == "" {
		t.Error("a second restart at once was allowed")
	}
	if n := th.Refused(); n != 2 {
		t.Errorf("Refused() = %d, want 2", n)
	}
	var none *Throttle
	if none.Allow(Restart) != "" || none.Refused() != 0 {
		t.Error("a nil Throttle must allow everything")
	}
}
