package storage

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// moveOldHeads moves trace headers kept under the first layout
// (famTraceV1, oldest first) to traceKey's, a batch at a time, before the
// spool serves anyone. The writes are unsynced: a cut part way through
// leaves some headers under the old key, and the next start moves them.
func (s *Spool) moveOldHeads() error {
	moved := 0
	for {
		var kvs []traceKV
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{famTraceV1}})
			defer it.Close()
			for it.Rewind(); it.Valid() && len(kvs) < pruneBatch; it.Next() {
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				kvs = append(kvs, traceKV{it.Item().KeyCopy(nil), v})
			}
			return nil
		})
		if err == nil && len(kvs) > 0 {
			err = s.rewriteHeads(kvs)
		}
		if err != nil {
			return fmt.Errorf("move trace headers to the current layout: %w", err)
		}
		if len(kvs) == 0 {
			if moved > 0 {
				s.log.Info("trace headers moved to the current layout", "headers", moved)
			}
			return nil
		}
		moved += len(kvs)
	}
}

func (s *Spool) rewriteHeads(kvs []traceKV) error {
	wb := s.newBatch()
	defer wb.Cancel()
	for _, kv := range kvs {
		if len(kv.k) == 17 {
			if err := wb.Set(traceKey(headGUID(kv.k)), kv.v); err != nil {
				return err
			}
		}
		if err := wb.Delete(kv.k); err != nil {
			return err
		}
	}
	return wb.Flush()
}
