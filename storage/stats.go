package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"
)

// DestStats is one destination's queue.
type DestStats struct {
	Queued           int64   `json:"queued"`
	QueuedAtStart    int64   `json:"queued_at_start"`
	Delivered        uint64  `json:"delivered"`
	Dead             int64   `json:"dead"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

// Stats is the spool's part of `spool stats --json` (docs/mqtt-api.md,
// spool-stats); the daemon adds sources and lanes (device/appliance,
// SpoolReport).
type Stats struct {
	Messages      int64                `json:"messages"`
	Bytes         int64                `json:"bytes"`
	MaxBytes      int64                `json:"max_bytes"`
	DiskBytes     int64                `json:"disk_bytes"`
	FreeDiskBytes int64                `json:"free_disk_bytes"`
	Undeliverable int64                `json:"undeliverable"`
	Destinations  map[string]DestStats `json:"destinations"`
	Commits       uint64               `json:"commits"`  // group commits (fsyncs) since start
	Appended      uint64               `json:"appended"` // messages stored since start
	Error         string               `json:"error,omitempty"`
	Reopens       uint64               `json:"reopens"` // re-opened from disk after a failed sync, since start
	// Full: intake is refusing, or about to: 95% of max_bytes used, or less
	// than min_free_disk free on the file system.
	Full bool `json:"full"`
	// Retained delivered messages kept for replay (spool.retain); they do
	// not count in Messages or Bytes, and make way when space is needed.
	RetainedMessages int64      `json:"retained_messages"`
	RetainedBytes    int64      `json:"retained_bytes"`
	OldestRetained   *time.Time `json:"oldest_retained,omitempty"`
	TraceBytes       int64      `json:"trace_bytes"` // estimated, bounded by spool.trace_max_bytes
}

// Stats reads the figures; it costs one index seek per destination.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	st := Stats{
		Bytes: s.usedBytesLocked(), MaxBytes: s.cfg.MaxBytes, FreeDiskBytes: s.freeDisk,
		Undeliverable: s.undeliv, Destinations: map[string]DestStats{},
		Commits: s.syncs, Appended: s.appended, Error: s.storageErr, Reopens: s.reopens,
	}
	for seg, si := range s.segs {
		if !s.retainedLocked(seg, si) {
			st.Messages += int64(si.count)
		}
	}
	var oldest time.Time
	st.RetainedBytes, st.RetainedMessages, oldest = s.retainedFiguresLocked()
	if !oldest.IsZero() {
		st.OldestRetained = &oldest
	}
	st.TraceBytes = max(s.traceBytes, 0)
	names := map[string]bool{}
	for d := range s.queued {
		names[d] = true
	}
	for d := range s.dead {
		names[d] = true
	}
	for d := range names {
		st.Destinations[d] = DestStats{Queued: s.queued[d], QueuedAtStart: s.atStart[d], Delivered: s.delivered[d], Dead: s.dead[d]}
	}
	st.Full = st.Bytes >= st.MaxBytes*95/100 || (st.FreeDiskBytes > 0 && st.FreeDiskBytes < s.cfg.MinFreeDisk)
	s.mu.Unlock()
	s.dbMu.RLock()
	if s.db != nil {
		lsm, vlog := s.db.Size()
		st.DiskBytes = lsm + vlog
	}
	s.dbMu.RUnlock()
	now := s.now()
	for d, ds := range st.Destinations {
		if ds.Queued > 0 {
			if t, ok := s.oldest(d); ok {
				ds.OldestAgeSeconds = now.Sub(t).Seconds()
				st.Destinations[d] = ds
			}
		}
	}
	return st
}

func (s *Spool) oldest(dest string) (time.Time, bool) {
	var t time.Time
	found := false
	_ = s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: namedPrefix(famQueue, dest)})
		defer it.Close()
		it.Rewind()
		if !it.Valid() {
			return nil
		}
		return it.Item().Value(func(v []byte) error {
			if len(v) >= 16 {
				t, found = time.Unix(0, int64(binary.BigEndian.Uint64(v[8:16]))), true
			}
			return nil
		})
	})
	return t, found
}

// DeadLetter is a message a destination gave up on.
type DeadLetter struct {
	Message
	Reason string `json:"reason"`
}

// DeadLetters lists dest's dead letters, oldest first.
func (s *Spool) DeadLetters(dest string) ([]DeadLetter, error) {
	var out []DeadLetter
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: namedPrefix(famDead, dest)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			rec, err := readDead(it.Item())
			if err != nil {
				// One torn entry must not hide the others.
				out = append(out, DeadLetter{
					Message: Message{Seq: seqOf(it.Item().Key())},
					Reason:  fmt.Sprintf("dead letter unreadable in the spool (%v): its content is lost; purge it", err),
				})
				continue
			}
			out = append(out, DeadLetter{
				Message: Message{Seq: seqOf(it.Item().Key()), GUID: rec.GUID.String(), Source: rec.Source, Received: rec.Received, Raw: rec.Raw, Attempts: rec.Attempts},
				Reason:  rec.Reason,
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: list dead letters of %s: %w", dest, err)
	}
	return out, nil
}

// RetryDead puts dest's dead letters (all, or only the given GUIDs) back at
// the end of its queue with their original GUIDs.
func (s *Spool) RetryDead(dest string, guids ...string) (int, error) {
	dls, err := s.DeadLetters(dest)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, dl := range dls {
		if len(guids) > 0 && !slices.Contains(guids, dl.GUID) {
			continue
		}
		if len(dl.Raw) == 0 && len(guids) == 0 {
			continue // nothing to send: such a letter is only purged
		}
		if len(dl.Raw) == 0 {
			return n, fmt.Errorf("spool: dead letter %d of %s has no content (%s); it cannot be retried, only purged", dl.Seq, dest, dl.Reason)
		}
		g, err := uuid.Parse(dl.GUID)
		if err != nil {
			return n, fmt.Errorf("spool: dead letter %d has a bad GUID: %w", dl.Seq, err)
		}
		e := Entry{Source: dl.Source, Raw: dl.Raw, Dests: []string{dest}, GUID: g, deadKey: namedSeqKey(famDead, dest, dl.Seq)}
		if _, err := s.Append(context.Background(), e); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// PurgeDead deletes dest's dead letters (all, or only the given GUIDs).
func (s *Spool) PurgeDead(dest string, guids ...string) (int, error) {
	dls, err := s.DeadLetters(dest)
	if err != nil {
		return 0, err
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		return 0, errReopening
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	var bytes int64
	for _, dl := range dls {
		if len(guids) > 0 && !slices.Contains(guids, dl.GUID) {
			continue
		}
		if err := wb.Delete(namedSeqKey(famDead, dest, dl.Seq)); err != nil {
			return 0, err
		}
		if g, err := uuid.Parse(dl.GUID); err == nil && s.tracing() {
			// In the purge's own batch: the trace says "purged" exactly when it was.
			kv := s.newEvent(g, traceEvent{At: s.now(), What: EvPurged, Dest: dest})
			if err := wb.Set(kv.k, kv.v); err != nil {
				return 0, err
			}
		}
		n++
		bytes += int64(len(dl.Raw)) + 64
	}
	if err := wb.Flush(); err != nil {
		return 0, fmt.Errorf("spool: purge dead letters of %s: %w", dest, err)
	}
	if err := s.syncLogs(false); err != nil {
		return 0, fmt.Errorf("spool: purge dead letters of %s: %w", dest, err)
	}
	s.mu.Lock()
	s.dead[dest] -= int64(n)
	s.deadBytes -= bytes
	if s.deadBytes < 0 {
		s.deadBytes = 0
	}
	s.mu.Unlock()
	return n, nil
}

func readDead(item *badger.Item) (*record, error) {
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, err
	}
	return decodeRecord(v)
}

// Undeliverable lists messages that matched no destination, oldest first.
func (s *Spool) Undeliverable(limit int) ([]DeadLetter, error) {
	var out []DeadLetter
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{famUndeliv}})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(out) < limit; it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return err
			}
			out = append(out, DeadLetter{Message: Message{Seq: rec.Seq, GUID: rec.GUID.String(), Source: rec.Source, Received: rec.Received, Raw: rec.Raw}, Reason: "matched no destination"})
		}
		return nil
	})
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("spool: list undeliverable: %w", err)
	}
	return out, nil
}
