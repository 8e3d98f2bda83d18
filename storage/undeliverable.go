package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// Rerouted is what RetryUndeliverable did.
type Rerouted struct {
	Queued    int `json:"queued"`    // queued for the destinations the rules name now
	Discarded int `json:"discarded"` // taken by a rubbish bin now: deleted
	Unmatched int `json:"unmatched"` // still matched by nothing: kept
}

// undelivItem is one undeliverable record with its key and stored size.
type undelivItem struct {
	key  []byte
	size int64
	rec  *record
}

// undeliverable reads the undeliverable records, all or those with the
// given GUIDs.
func (s *Spool) undeliverable(guids []string) ([]undelivItem, error) {
	var out []undelivItem
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{famUndeliv}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return err
			}
			if len(guids) == 0 || slices.Contains(guids, rec.GUID.String()) {
				// Without the content: RetryUndeliverable reads each whole on
				// its own (full), so a store of large reports never sits in
				// memory at once.
				rec.Raw = nil
				out = append(out, undelivItem{key: it.Item().KeyCopy(nil), size: int64(it.Item().ValueSize()), rec: rec})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spool: read undeliverable: %w", err)
	}
	return out, nil
}

// full reads item's whole record again.
func (s *Spool) full(item *undelivItem) error {
	return s.view(func(txn *badger.Txn) error {
		got, err := txn.Get(item.key)
		if err != nil {
			return fmt.Errorf("spool: read undeliverable %s: %w", item.rec.GUID, err)
		}
		item.rec, err = readDead(got)
		return err
	})
}

// RetryUndeliverable routes the undeliverable messages (all, or the given
// GUIDs) again: route says which destinations take a message now, or that
// a rubbish bin does. A routed message is queued under its GUID and then
// taken out of the undeliverable store; a crash between the two leaves it
// in both, and a second retry queues it again under the same GUID, which
// receivers treat as the duplicate it is: nothing is lost either way.
func (s *Spool) RetryUndeliverable(route func(raw []byte) (dests []string, discard bool), guids ...string) (Rerouted, error) {
	var r Rerouted
	items, err := s.undeliverable(guids)
	if err != nil {
		return r, err
	}
	for _, it := range items {
		if err := s.full(&it); err != nil {
			return r, err
		}
		dests, discard := route(it.rec.Raw)
		switch {
		case discard:
			r.Discarded++
		case len(dests) == 0:
			r.Unmatched++
			continue
		default:
			e := Entry{Source: it.rec.Source, Raw: it.rec.Raw, Dests: dests, GUID: it.rec.GUID, rerouted: true}
			if _, err := s.Append(context.Background(), e); err != nil {
				return r, fmt.Errorf("spool: queue undeliverable %s again: %w", it.rec.GUID, err)
			}
			r.Queued++
		}
		if err := s.dropUndeliverable([]undelivItem{it}); err != nil {
			return r, err
		}
	}
	return r, nil
}

// PurgeUndeliverable deletes undeliverable messages (all, or the given
// GUIDs) and says how many.
func (s *Spool) PurgeUndeliverable(guids ...string) (int, error) {
	items, err := s.undeliverable(guids)
	if err != nil {
		return 0, err
	}
	return len(items), s.dropUndeliverable(items)
}

// dropUndeliverable deletes items from the undeliverable store, durably,
// and from its counts.
func (s *Spool) dropUndeliverable(items []undelivItem) error {
	if len(items) == 0 {
		return nil
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		return errReopening
	}
	wb := s.newBatch()
	defer wb.Cancel()
	var bytes int64
	for _, it := range items {
		if err := wb.Delete(it.key); err != nil {
			return fmt.Errorf("spool: delete undeliverable: %w", err)
		}
		bytes += it.size
	}
	err := wb.Flush()
	if err == nil {
		err = s.syncLogs(false)
	}
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("spool: delete undeliverable: %w", err)
	}
	s.mu.Lock()
	s.undeliv = max(s.undeliv-int64(len(items)), 0)
	s.undelivBytes = max(s.undelivBytes-bytes, 0)
	s.mu.Unlock()
	return nil
}
