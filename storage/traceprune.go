package storage

import (
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"
)

// pruneBatch bounds the traces one pass deletes: a pass holds the keys in
// memory and runs on the clean-up loop.
const pruneBatch = 2048

// pruneTraces deletes, oldest first, the traces older than
// spool.trace_retain and, while the traces pass spool.trace_max_bytes,
// more, down to 90% of it.
func (s *Spool) pruneTraces() {
	if !s.tracing() {
		return
	}
	for range 16 {
		s.mu.Lock()
		excess := s.traceBytes - int64(s.cfg.TraceMaxBytes)
		if excess > 0 {
			excess += int64(s.cfg.TraceMaxBytes) / 10
		}
		s.mu.Unlock()
		n, err := s.pruneTraceBatch(s.now().Add(-s.cfg.traceFor()), excess)
		if err != nil {
			s.log.Warn("trace clean-up failed; old traces stay until the next try", "err", err)
			return
		}
		if n < pruneBatch {
			return
		}
	}
}

// pruneTraceBatch deletes up to pruneBatch of the oldest traces: those
// received before cutoff, and while excess is positive, the next ones too.
func (s *Spool) pruneTraceBatch(cutoff time.Time, excess int64) (int, error) {
	var keys [][]byte
	var freed int64
	n := 0
	err := s.view(func(txn *badger.Txn) error {
		// Header keys are time-ordered GUIDs (newGUID), newest first
		// (traceKey): backwards is oldest first.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{famTrace}, PrefetchValues: false, Reverse: true})
		defer it.Close()
		for it.Seek(traceKey(uuid.UUID{})); it.Valid() && n < pruneBatch; it.Next() {
			k := it.Item().Key()
			if len(k) != 17 {
				continue
			}
			g := headGUID(k)
			if guidMillis(g[:]) >= cutoff.UnixMilli() && freed >= excess {
				return nil
			}
			ks, size, err := traceKeysOf(txn, g)
			if err != nil {
				return err
			}
			keys = append(keys, ks...)
			freed += size
			n++
		}
		return nil
	})
	if err != nil || len(keys) == 0 {
		return 0, err
	}
	if err := s.deleteKeys(keys); err != nil {
		return 0, err
	}
	s.mu.Lock()
	s.traceBytes = max(s.traceBytes-freed, 0)
	s.mu.Unlock()
	return n, nil
}

// traceKeysOf lists a trace's header, control-ID index and event keys,
// with their estimated size.
func traceKeysOf(txn *badger.Txn, g uuid.UUID) ([][]byte, int64, error) {
	var keys [][]byte
	var size int64
	h, err := readHead(txn, g)
	if err != nil || h == nil {
		// A header that cannot be read goes all the same.
		keys, size = append(keys, traceKey(g)), 17+16
	} else {
		for _, kv := range headEntries(h) {
			keys = append(keys, kv.k)
			size += kv.size()
		}
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: eventPrefix(g), PrefetchValues: false})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		keys = append(keys, it.Item().KeyCopy(nil))
		size += int64(len(it.Item().Key())) + it.Item().ValueSize() + 16
	}
	return keys, size, nil
}

// deleteKeys deletes keys in one batch, unsynced: a pruned trace that
// comes back after a cut is pruned again.
func (s *Spool) deleteKeys(keys [][]byte) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		return errReopening
	}
	wb := s.newBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	return wb.Flush()
}
