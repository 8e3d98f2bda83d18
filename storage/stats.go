package storage

import (
	"bytes"
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

// eachDead calls fn for each of dest's dead letters, oldest first, one at
// a time: a destination that gave up on hundreds of large reports (a PDF of
// several MiB each) must never have them all in memory at once. size is
// the stored record's.
func (s *Spool) eachDead(dest string, fn func(dl DeadLetter, size int64) error) error {
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: namedPrefix(famDead, dest), PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			dl := DeadLetter{Message: Message{Seq: seqOf(item.Key())}}
			if rec, err := readDead(item); err != nil {
				// One torn entry must not hide the others.
				dl.Reason = fmt.Sprintf("dead letter unreadable in the spool (%v): its content is lost; purge it", err)
			} else {
				dl.Message = Message{Seq: dl.Seq, GUID: rec.GUID.String(), Source: rec.Source, Received: rec.Received, Raw: rec.Raw, Attempts: rec.Attempts}
				dl.Reason = rec.Reason
			}
			if err := fn(dl, item.ValueSize()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("spool: list dead letters of %s: %w", dest, err)
	}
	return nil
}

// DeadLetters lists dest's dead letters, oldest first, whole. For a list
// an operator reads, DeadLetterHeads keeps memory bounded.
func (s *Spool) DeadLetters(dest string) ([]DeadLetter, error) {
	var out []DeadLetter
	err := s.eachDead(dest, func(dl DeadLetter, _ int64) error {
		out = append(out, dl)
		return nil
	})
	return out, err
}

// DeadLetterHeads lists dest's dead letters, oldest first, each with only
// its first segment (the MSH, for the control ID and type) as Raw.
func (s *Spool) DeadLetterHeads(dest string) ([]DeadLetter, error) {
	var out []DeadLetter
	err := s.eachDead(dest, func(dl DeadLetter, _ int64) error {
		dl.Raw = headSegment(dl.Raw)
		out = append(out, dl)
		return nil
	})
	return out, err
}

// headSegment is the first segment of an HL7 message (up to the first CR
// or LF), at most 4 KiB, copied so the message itself can be freed.
func headSegment(raw []byte) []byte {
	if i := bytes.IndexAny(raw, "\r\n"); i >= 0 {
		raw = raw[:i]
	}
	return bytes.Clone(raw[:min(len(raw), 4<<10)])
}

// RetryDead puts dest's dead letters (all, or only the given GUIDs) back at
// the end of its queue with their original GUIDs, one at a time.
func (s *Spool) RetryDead(dest string, guids ...string) (int, error) {
	var todo []uint64
	err := s.eachDead(dest, func(dl DeadLetter, _ int64) error {
		switch {
		case len(guids) > 0 && !slices.Contains(guids, dl.GUID):
		case len(dl.Raw) == 0 && len(guids) == 0: // nothing to send: only purged
		case len(dl.Raw) == 0:
			return fmt.Errorf("dead letter %d has no content (%s); it cannot be retried, only purged", dl.Seq, dl.Reason)
		default:
			todo = append(todo, dl.Seq)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, seq := range todo {
		if err := s.retryOneDead(dest, seq); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// retryOneDead re-queues one dead letter, read again on its own.
func (s *Spool) retryOneDead(dest string, seq uint64) error {
	key := namedSeqKey(famDead, dest, seq)
	var rec *record
	err := s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		rec, err = readDead(item)
		return err
	})
	if err != nil {
		return fmt.Errorf("spool: dead letter %d of %s: %w", seq, dest, err)
	}
	e := Entry{Source: rec.Source, Raw: rec.Raw, Dests: []string{dest}, GUID: rec.GUID, deadKey: key}
	_, err = s.Append(context.Background(), e)
	return err
}

// PurgeDead deletes dest's dead letters (all, or only the given GUIDs).
func (s *Spool) PurgeDead(dest string, guids ...string) (int, error) {
	type purge struct {
		seq  uint64
		guid string
		size int64
	}
	var dls []purge
	err := s.eachDead(dest, func(dl DeadLetter, size int64) error {
		if len(guids) == 0 || slices.Contains(guids, dl.GUID) {
			dls = append(dls, purge{dl.Seq, dl.GUID, size})
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		return 0, errReopening
	}
	wb := s.newBatch()
	defer wb.Cancel()
	n := 0
	var bytes int64
	for _, dl := range dls {
		if err := wb.Delete(namedSeqKey(famDead, dest, dl.seq)); err != nil {
			return 0, err
		}
		if g, err := uuid.Parse(dl.guid); err == nil && s.tracing() {
			// In the purge's own batch: the trace says "purged" exactly when it was.
			kv := s.newEvent(g, traceEvent{At: s.now(), What: EvPurged, Dest: dest})
			if err := wb.Set(kv.k, kv.v); err != nil {
				return 0, err
			}
		}
		n++
		bytes += dl.size
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

// readDead decodes a stored record (a dead letter's, an undeliverable
// message's) from its item.
func readDead(item *badger.Item) (*record, error) {
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, err
	}
	return decodeRecord(v)
}

// Undeliverable lists messages that matched no destination, oldest first,
// each with its first segment (the MSH) as Raw.
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
			// The first segment only (control ID and type): a list of large
			// reports must not sit in memory whole.
			out = append(out, DeadLetter{Message: Message{Seq: rec.Seq, GUID: rec.GUID.String(), Source: rec.Source, Received: rec.Received, Raw: headSegment(rec.Raw)}, Reason: "matched no destination"})
		}
		return nil
	})
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("spool: list undeliverable: %w", err)
	}
	return out, nil
}
