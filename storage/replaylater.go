package storage

import "strings"

// laterTouches says, for each key a commit-log record marks as a large
// value, whether a later record of the same log set, deleted or dropped
// it. Replay judges a record by whether Badger holds its large values
// (largeKept), which only says something while nothing changed the key
// since: a dead letter written twice (two Kills of one message, the second
// with another attempt count) held the second value, so the first record
// looked unkept, was left out, and its unset took the key away under the
// second: an ACKed message in neither the queue nor the dead letters (the
// power-cut rig, 7 December 2026). A later record on the key is itself
// proof enough: nothing touches a large value's key until its group was
// synced (Next waits for the sync; Kill syncs its copy before it
// releases), so the earlier record was kept.
type laterTouches struct {
	last  map[string]int // key → index of the last record touching it
	drops []indexedDrop
}

type indexedDrop struct {
	at       int
	prefixes [][]byte
}

// scanTouches reads the log once (replay) and notes the touches.
func scanTouches(replay func(fn func(rec []byte) error) error) (*laterTouches, error) {
	lt := &laterTouches{last: map[string]int{}}
	i := 0
	err := replay(func(rec []byte) error {
		i++
		ops, err := recordOps(rec)
		if err != nil {
			return err
		}
		lt.note(i, ops)
		return nil
	})
	return lt, err
}

// note records record i's operations: a large value starts following its
// key; a set or delete of a followed key moves its last touch.
func (lt *laterTouches) note(i int, ops []op) {
	for _, o := range ops {
		switch o.kind {
		case opLarge:
			lt.last[string(o.key)] = i
		case opSet, opSetTTL, opDelete:
			if _, ok := lt.last[string(o.key)]; ok {
				lt.last[string(o.key)] = i
			}
		case opDrop:
			lt.drops = append(lt.drops, indexedDrop{at: i, prefixes: o.prefixes})
		}
	}
}

// superseded says whether a record after record i touched key.
func (lt *laterTouches) superseded(i int, key []byte) bool {
	if lt == nil {
		return false
	}
	if lt.last[string(key)] > i {
		return true
	}
	for _, d := range lt.drops {
		if d.at > i {
			for _, p := range d.prefixes {
				if strings.HasPrefix(string(key), string(p)) {
					return true
				}
			}
		}
	}
	return false
}
