package storage

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hl7edge/hl7edge/storage/commitlog"
)

// commitLogDir is where the commit log lives, inside the spool directory.
const commitLogDir = "commitlog"

// maxLiveSegments is how many commit-log segments are kept before a
// checkpoint syncs Badger's own logs to let the older ones go. With 4 MiB
// segments that is at most some 20 MiB to replay at start.
const maxLiveSegments = 5

func (s *Spool) openCommitLog(key []byte) error {
	l, err := commitlog.Open(filepath.Join(s.cfg.Dir, commitLogDir), commitlog.Options{Key: key, Sync: s.logSyncHook, Flush: s.gatedFlush})
	if err != nil {
		return err
	}
	s.clog = l
	return nil
}

// gatedFlush runs the commit log's own flushes (a full segment's seal,
// inside an Append) through the gate, like every sync of the spool's: no
// other writer's flush runs beside it, and a failure there is known to
// every writer before the next flush starts.
func (s *Spool) gatedFlush(flush func() error) error {
	return s.gate.Sync(s.goodEpoch, flush)
}

// replayCommitLog applies the log's records to Badger again, makes the
// result durable in Badger's own files and starts the log afresh. It runs
// at open and at a re-open after a fault, before anything else writes.
//
// A record whose large value Badger's value log did not keep (largeKept)
// belongs to a group that was never answered AA: its value log was to be
// synced after the log's write. It is not applied, and what Badger may
// hold of its sets is deleted, so no queue entry is left pointing at a
// message that is not there. Its deletes are not applied either: a dead
// letter it re-queued stays a dead letter.
func (s *Spool) replayCommitLog() error {
	later, err := scanTouches(func(fn func([]byte) error) error { _, err := s.clog.Replay(fn); return err })
	if err != nil {
		return fmt.Errorf("replay the commit log: %w", err)
	}
	t := s.db.NewWriteBatch()
	defer func() { t.Cancel() }()
	skipped, i := 0, 0
	n, err := s.clog.Replay(func(rec []byte) error {
		i++
		ops, err := recordOps(rec)
		if err != nil {
			return err
		}
		if !s.largeKept(ops, i, later) {
			skipped++
			return unsetOps(t, ops)
		}
		for _, o := range ops {
			if err := s.replayOp(&t, o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replay the commit log: %w", err)
	}
	if err := t.Flush(); err != nil {
		return fmt.Errorf("replay the commit log: %w", err)
	}
	if skipped > 0 {
		s.log.Warn("spool: commit-log records whose large message the value log did not keep were left out (their senders were not answered AA)", "records", skipped)
	}
	s.replayed = n
	return nil
}

func (s *Spool) replayOp(t **badger.WriteBatch, o op) error {
	switch o.kind {
	case opSet:
		return (*t).Set(o.key, o.val)
	case opSetTTL:
		e := badger.NewEntry(o.key, o.val)
		e.ExpiresAt = o.expiresAt
		return (*t).SetEntry(e)
	case opDelete:
		return (*t).Delete(o.key)
	case opDrop:
		if err := (*t).Flush(); err != nil {
			return err
		}
		*t = s.db.NewWriteBatch()
		return s.db.DropPrefix(o.prefixes...)
	}
	return nil // opLarge: the value is in Badger's value log (largeKept checked it)
}

// largeKept says whether Badger holds every large value record i marks,
// whole (size and CRC as logged), or a later record changed its key.
func (s *Spool) largeKept(ops []op, i int, later *laterTouches) bool {
	kept := true
	for _, o := range ops {
		if o.kind != opLarge || later.superseded(i, o.key) {
			continue
		}
		err := s.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get(o.key)
			if err != nil {
				return err
			}
			return item.Value(func(v []byte) error {
				if !o.holds(v) {
					return errBadOp
				}
				return nil
			})
		})
		kept = kept && err == nil
	}
	return kept
}

// unsetOps deletes what a record left out would have set (op.unset).
func unsetOps(t *badger.WriteBatch, ops []op) error {
	for _, o := range ops {
		if o.unset() {
			if err := t.Delete(o.key); err != nil {
				return err
			}
		}
	}
	return nil
}

// restartCommitLog makes everything Badger holds durable in its own files
// and starts the commit log afresh; the records replayed are not needed
// again. The new header's write is a flush too (in direct-I/O mode the
// only one), so it runs inside the gate with Badger's syncs: its failure
// reaches the other writers on the file system.
func (s *Spool) restartCommitLog() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	err := s.gate.Sync(s.goodEpoch, func() error {
		if err := s.syncFiles(true); err != nil {
			return fmt.Errorf("sync the spool after replaying the commit log: %w", err)
		}
		if err := s.clog.Restart(); err != nil {
			return fmt.Errorf("start the commit log: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	cur := s.clog.Current()
	s.ckFrom, s.ckSeen, s.ckMem = cur, cur, map[uint64]int{}
	return nil
}

// checkpoint lets the commit log reuse segments whose records Badger holds
// durably. Badger's memtable and value logs are not synced per commit, so
// a record is durable in Badger once the memtable it went into was flushed
// into a table (its .mem file is then deleted) and the value log that
// table points into was synced, or once all those files were synced. The
// first comes every few MiB at a high feed rate; at a low rate the log
// fills first, and the second is done.
//
// It runs on the commit loop after a group and on the lazy-sync tick (the
// log also fills with writes no group follows), at most every
// checkpointEvery.
func (s *Spool) checkpoint(now time.Time) {
	if now.Sub(s.ckAt) < checkpointEvery {
		return
	}
	s.ckAt = now
	cur := s.clog.Current()
	if cur <= s.ckFrom {
		return
	}
	mems, err := logFiles(s.cfg.Dir, walExt)
	if err != nil || len(mems) == 0 {
		return
	}
	newest, oldest := mems[len(mems)-1].fid, mems[0].fid
	// Segments finished since the last look went into memtables up to the
	// newest one now (at worst a later one: later is the safe side).
	for q := s.ckSeen; q < cur; q++ {
		s.ckMem[q] = newest
	}
	s.ckSeen = max(s.ckSeen, cur)
	from := s.ckFrom
	for from < cur {
		if m, ok := s.ckMem[from]; !ok || m >= oldest {
			break
		}
		from++
	}
	// Badger's sync of the tables those memtables went into may have
	// come after a failed flush that dropped their blocks (damage.go). And
	// the tables hold only pointers to the message bodies, which Badger's
	// value log took without a sync: they are synced before the log lets
	// go of its copies.
	if from > s.ckFrom && s.noFailedSync() && s.checkpointSync() == nil {
		for ; s.ckFrom < from; s.ckFrom++ {
			delete(s.ckMem, s.ckFrom)
		}
	}
	if s.clog.Live() >= maxLiveSegments && s.ckFrom < cur {
		if s.checkpointSync() == nil {
			for q := s.ckFrom; q < cur; q++ {
				delete(s.ckMem, q)
			}
			s.ckFrom = cur
			s.checkpoints++
		}
	}
	s.clog.Release(s.ckFrom)
}

const checkpointEvery = 100 * time.Millisecond

// checkpointSync makes everything Badger holds durable in its own logs.
// It holds dbMu: the clean-up's DropPrefix, under the exclusive lock,
// removes every memtable log before it makes the next, and a sync that
// looked in between would find none and fault the spool.
func (s *Spool) checkpointSync() error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		return errReopening
	}
	return s.syncLogs(true)
}
