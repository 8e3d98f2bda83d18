package health

import (
	"slices"
	"sync"
	"time"
)

// Alarms are a box's active alarms, one entry per kind, oldest first. A
// Registry keeps them in its own Alarms unless given one that outlives it
// (Registry.UseAlarms).
type Alarms struct {
	mu   sync.Mutex
	list []Alarm
}

// NewAlarms makes an empty set of alarms.
func NewAlarms() *Alarms { return &Alarms{} }

func (a *Alarms) raise(kind, detail string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	i := slices.IndexFunc(a.list, func(x Alarm) bool { return x.Kind == kind })
	if i >= 0 && now.Sub(a.list[i].Last) <= AlarmHold {
		a.list[i].Detail, a.list[i].Last = detail, now
		a.list[i].Count++
		return
	}
	if i >= 0 {
		a.list = slices.Delete(a.list, i, i+1)
	}
	a.list = append(a.list, Alarm{Kind: kind, Detail: detail, Since: now, Last: now, Count: 1})
}

// clear ends the alarm of kind and says whether it was active.
func (a *Alarms) clear(kind string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := len(a.list)
	a.list = slices.DeleteFunc(a.list, func(x Alarm) bool { return x.Kind == kind })
	return len(a.list) != n
}

// active drops the alarms last raised more than AlarmHold before now and
// returns the rest.
func (a *Alarms) active(now time.Time) []Alarm {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.list = slices.DeleteFunc(a.list, func(x Alarm) bool { return now.Sub(x.Last) > AlarmHold })
	return slices.Clone(a.list)
}

// noneDead says whether a readable spool holds no dead letter for any
// destination: then dead_letter's cause has ended (they were retried or
// purged). An unreadable spool cannot tell.
func noneDead(s SpoolSnapshot) bool {
	if s.Error != "" || s.Queues == nil {
		return false
	}
	for _, q := range s.Queues {
		if q.Dead > 0 {
			return false
		}
	}
	return true
}
