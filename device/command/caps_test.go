package command

import (
	"strings"
	"testing"
	"time"
)

// TestExpiryIsCapped: a command may not stay valid for more than a day; one
// that claims to (a replay waiting to happen) is rejected, naming the limit.
func TestExpiryIsCapped(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	d := NewDispatcher(func() time.Time { return now })
	d.Register("health", nil)
	for _, c := range []struct {
		in time.Duration
		ok bool
	}{{time.Minute, true}, {24 * time.Hour, true}, {24*time.Hour + time.Second, false}, {100 * 365 * 24 * time.Hour, false}} {
		exp := now.Add(c.in)
		why := d.Check(Request{ID: "x", Name: "health", Expires: &exp})
		if (why == "") != c.ok {
			t.Errorf("expiry in %s: Check says %q, want allowed %v", c.in, why, c.ok)
		}
		if !c.ok && !strings.Contains(why, "24h") {
			t.Errorf("expiry in %s: reason %q does not name the 24h limit", c.in, why)
		}
	}
}
