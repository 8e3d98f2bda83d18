package health

import (
	"sync/atomic"
	"testing"
)

// TestAlarmsOutliveARegistry: a pipeline restart builds a new registry;
// the alarms the old one held (config_rolled_back, raised just before the
// restart) are still active in the new one (issue 28, point 2).
func TestAlarmsOutliveARegistry(t *testing.T) {
	book := NewAlarms()
	old := NewRegistry("gw", "v1", nil)
	old.UseAlarms(book)
	old.RaiseAlarm("config_rolled_back", "configuration from command c1 rolled back")
	next := NewRegistry("gw", "v1", nil)
	next.UseAlarms(book)
	if got := next.Snapshot().Alarms; len(got) != 1 || got[0].Kind != "config_rolled_back" {
		t.Fatalf("alarms after the restart: %+v, want config_rolled_back", got)
	}
	next.ClearAlarm("config_rolled_back")
	if got := old.Snapshot().Alarms; len(got) != 0 {
		t.Errorf("cleared in one registry, still active in the other: %+v", got)
	}
}

// TestDeadLetterAlarmEndsWithTheDeadLetters: dead_letter is active while a
// destination holds dead letters; once none does (retried or purged) it
// ends, so the box can be healthy again.
func TestDeadLetterAlarmEndsWithTheDeadLetters(t *testing.T) {
	r := NewRegistry("gw", "v1", nil)
	var dead atomic.Int64
	dead.Store(1)
	r.SetSpoolProbe(func() SpoolSnapshot {
		return SpoolSnapshot{Queues: map[string]QueueStat{"ehr": {Dead: dead.Load()}, "lis": {}}}
	})
	r.RaiseAlarm(AlarmDeadLetter, "destination ehr: message g1 moved to dead letters")
	r.RaiseAlarm(AlarmURLRefused, "ehr: http://x refused")
	if got := r.Snapshot().Alarms; len(got) != 2 {
		t.Fatalf("alarms with a dead letter: %+v, want dead_letter and url_refused", got)
	}
	dead.Store(0)
	got := r.Snapshot().Alarms
	if len(got) != 1 || got[0].Kind != AlarmURLRefused {
		t.Fatalf("alarms with no dead letter left: %+v, want url_refused alone", got)
	}
	r.SetSpoolProbe(func() SpoolSnapshot { return SpoolSnapshot{Error: "disk gone"} })
	r.RaiseAlarm(AlarmDeadLetter, "destination ehr: message g2 moved to dead letters")
	if got := r.Snapshot().Alarms; len(got) != 2 {
		t.Errorf("alarms with an unreadable spool: %+v; the dead letters cannot be counted, so dead_letter stays", got)
	}
}
