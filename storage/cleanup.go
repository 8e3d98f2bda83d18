package storage

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// segDelivered says whether nothing in segment seg is still owed to anyone.
func (s *Spool) segDelivered(seg uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	si := s.segs[seg]
	return si == nil || si.pending <= 0
}

// usedBytesLocked is what counts against max_bytes: every message still
// owed, dead or undeliverable. Retained delivered segments do not count:
// they are the first to go when space is needed (retain.go).
func (s *Spool) usedBytesLocked() int64 {
	var n int64
	for seg, si := range s.segs {
		if !s.retainedLocked(seg, si) {
			n += si.bytes
		}
	}
	return n + s.deadBytes + s.undelivBytes
}

// gcLoop drops fully delivered segments, refreshes the free-disk figure and
// saves counters. Dropping whole segments is what keeps disk use flat.
func (s *Spool) gcLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.gcEvery)
	defer t.Stop()
	vlogGC := time.NewTicker(s.cfg.ValueLogCleanup)
	defer vlogGC.Stop()
	trim := time.NewTicker(100 * time.Millisecond)
	defer trim.Stop()
	trimmer := newTableTrimmer(s.cfg.Dir)
	var dropped int64 // bytes of segments dropped since the value log was last cleaned
	for {
		select {
		case <-s.stop:
			return
		case <-trim.C:
			if err := trimmer.maybeTrim(); err != nil {
				s.log.Warn("spool table pages stay mapped; resident memory reads high but nothing is at risk", "err", err)
				trim.Stop()
			}
			continue
		case <-t.C:
			s.refreshFreeDisk()
			s.pruneTraces()
			s.saveCounters(false)
		case <-s.gcKick:
		case <-vlogGC.C:
			s.cleanValueLog()
			dropped = 0
			continue
		}
		n, err := s.dropDelivered()
		if err != nil {
			s.log.Error("spool clean-up failed; delivered data stays on disk until the next try", "err", err)
		}
		// Message bodies live in the value log: dropping their segments
		// frees their space only once its files are cleaned. Once a
		// quarter of a file's worth has gone, clean now rather than at the
		// next tick, so that the disk a steady flow uses stays flat.
		if dropped += n; dropped >= vlogFileSize/4 && !s.holdVlogClean.Load() {
			s.cleanValueLog()
			dropped = 0
		}
	}
}

func (s *Spool) dropDelivered() (int64, error) {
	// The list is made under the exclusive lock, from accounting a re-open
	// cannot change meanwhile; a faulted spool drops nothing, since its
	// accounting may not match its disk until it is re-opened.
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if s.db == nil || s.faultErr() != nil {
		return 0, nil
	}
	drop := s.segsToDrop()
	if len(drop) == 0 {
		return 0, nil
	}
	slices.Sort(drop)
	prefixes := make([][]byte, len(drop))
	for i, seg := range drop {
		prefixes[i] = segPrefix(seg)
	}
	s.log.Debug("spool dropping delivered segments", "segments", len(drop))
	if err := s.dropPrefix(prefixes...); err != nil {
		return 0, fmt.Errorf("drop %d delivered segments: %w", len(drop), err)
	}
	var bytes int64
	s.mu.Lock()
	for _, seg := range drop {
		if si := s.segs[seg]; si != nil {
			bytes += si.bytes
		}
		// A segment that gained work meanwhile cannot exist: only the current
		// segment receives appends and it is never dropped.
		delete(s.segs, seg)
	}
	s.mu.Unlock()
	s.log.Debug("spool dropped delivered segments", "segments", len(drop), "first", drop[0], "last", drop[len(drop)-1])
	return bytes, nil
}

// traceBytesSlack is how far the saved trace size may lag: it is an
// estimate, and saving it at every tick would be a write of its own every
// two seconds on a card.
const traceBytesSlack = 1 << 20

// saveCounters saves the delivered counters and, when it has moved by
// traceBytesSlack or all is true (at close), the trace size.
func (s *Spool) saveCounters(all bool) {
	s.mu.Lock()
	traceBytes := s.traceBytes
	moved := traceBytes - s.traceBytesSave
	saveTrace := moved != 0 && (all || moved >= traceBytesSlack || moved <= -traceBytesSlack)
	changed := map[string]uint64{}
	for d, n := range s.delivered {
		if s.deliveredSave[d] != n {
			changed[d] = n
		}
	}
	s.mu.Unlock()
	if len(changed) == 0 && !saveTrace {
		return
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		return
	}
	err := s.update(func(txn *wtxn) error {
		if err := txn.Set(keyTraceBytes, binary.BigEndian.AppendUint64(nil, uint64(max(traceBytes, 0)))); err != nil {
			return err
		}
		for d, n := range changed {
			if err := txn.Set([]byte("xdelv"+d), binary.BigEndian.AppendUint64(nil, n)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.mu.Lock()
		maps.Copy(s.deliveredSave, changed)
		s.traceBytesSave = traceBytes
		s.mu.Unlock()
	}
}

func (s *Spool) refreshFreeDisk() {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.cfg.Dir, &st); err != nil {
		return
	}
	s.mu.Lock()
	s.freeDisk = int64(st.Bavail) * int64(st.Bsize)
	s.mu.Unlock()
}

// cleanValueLog gives back the space of value-log files that are mostly
// garbage. Only messages over the value threshold (256 KiB) live there.
//
// Badger's clean-up copies a file's live values into the current value-log
// file, unsynced (SyncWrites is off), and then removes the old file: a cut
// after the removal is durable but before the copies are loses every
// message that was copied. An open iterator makes Badger defer removing
// rewritten files until the last iterator closes; so one is held across
// the clean-up, the copies and their new pointers are synced, and only then
// is it closed.
func (s *Spool) cleanValueLog() {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		return
	}
	txn := s.db.NewTransaction(false)
	hold := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
	if raceEnabled {
		// Badger v4.9.6's clean-up reads the memtable's newest version
		// (DB.MaxVersion, for the versions compaction must keep meanwhile)
		// without the lock its writer updates it under. An aligned 64-bit
		// word is not torn, and a stale read only keeps more versions, so
		// the firmware lets writes go on; under the detector they wait,
		// so that the suite's races are the spool's own.
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
	}
	n := 0
	for s.db.RunValueLogGC(0.5) == nil {
		n++
	}
	if n > 0 {
		if err := s.syncLogs(true); err != nil {
			// Never close hold: the old files then stay until the DB is
			// closed, which leaves them in place, and the re-open after
			// the fault reads whichever copy the disk kept. (hold and its
			// transaction are left to the closed DB.)
			s.log.Error("spool value-log clean-up could not sync the copied messages; the old value-log files are kept", "err", err)
			return
		}
	}
	hold.Close()
	txn.Discard()
}
