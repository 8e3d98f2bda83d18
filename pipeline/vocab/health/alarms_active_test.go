package health

import (
	"testing"
	"time"
)

// TestAlarms: one entry per kind with its latest detail and count, cleared
// by ClearAlarm, and gone AlarmHold after it was last raised.
func TestActiveAlarms(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	r := NewRegistry("gw", "v1", func() time.Time { return now })
	r.RaiseAlarm("spool_full", "first")
	now = now.Add(time.Minute)
	r.RaiseAlarm("dead_letter", "guid a")
	r.RaiseAlarm("spool_full", "second")
	got := r.Snapshot().Alarms
	if len(got) != 2 || got[0].Kind != "spool_full" || got[0].Detail != "second" || got[0].Count != 2 ||
		!got[0].Since.Equal(now.Add(-time.Minute)) || got[1].Kind != "dead_letter" {
		t.Fatalf("alarms: %+v", got)
	}
	r.ClearAlarm("spool_full")
	if got := r.Snapshot().Alarms; len(got) != 1 || got[0].Kind != "dead_letter" {
		t.Fatalf("after clear: %+v", got)
	}
	now = now.Add(AlarmHold + time.Second)
	if got := r.Snapshot().Alarms; len(got) != 0 {
		t.Fatalf("after AlarmHold: %+v", got)
	}
	// Raised again after it lapsed: a new alarm, counted from one.
	r.RaiseAlarm("dead_letter", "guid b")
	if got := r.Snapshot().Alarms; len(got) != 1 || got[0].Count != 1 || !got[0].Since.Equal(now) {
		t.Fatalf("raised again: %+v", got)
	}
}
