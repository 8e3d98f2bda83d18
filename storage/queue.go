package storage

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

func (s *Spool) signal(dest string) {
	s.mu.Lock()
	ch := s.notify[dest]
	s.mu.Unlock()
	if ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// segOf reads the segment number a queue entry points into.
func segOf(item *badger.Item) (uint64, error) {
	var seg uint64
	err := item.Value(func(v []byte) error {
		if len(v) >= 8 {
			seg = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return seg, err
}

func getString(txn *badger.Txn, k []byte) (string, bool, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	v, err := item.ValueCopy(nil)
	return string(v), err == nil, err
}

// Wait returns a channel that receives a signal when new messages may be
// queued for dest. It is coalescing: one signal may stand for many messages.
func (s *Spool) Wait(dest string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.notify[dest]
	if ch == nil {
		ch = make(chan struct{}, 1)
		s.notify[dest] = ch
	}
	return ch
}

// Next returns up to max messages queued for dest with a sequence number
// above after, oldest first. A message whose group commit is not yet synced
// is not handed out: if the sync failed or the power went, the sender would
// send it again and the destination would get it under a second GUID.
//
// A queued message that cannot be read is moved to the dead letters, its
// content lost and said so, rather than stopping the destination's queue
// for good (quarantine).
func (s *Spool) Next(dest string, after uint64, max int) ([]Message, error) {
	s.mu.Lock()
	durable := s.durableSeq
	s.mu.Unlock()
	var out []Message
	var bad []unreadable
	err := s.view(func(txn *badger.Txn) error {
		prefix := namedPrefix(famQueue, dest)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		var budget int64 = 4 << 20
		for it.Seek(namedSeqKey(famQueue, dest, after+1)); it.Valid() && len(out) < max && budget > 0; it.Next() {
			item := it.Item()
			seq := seqOf(item.Key())
			if seq > durable {
				break
			}
			seg, err := segOf(item)
			if err != nil {
				return err
			}
			rec, err := readMessage(txn, seg, seq)
			if err != nil {
				bad = append(bad, unreadable{seq: seq, seg: seg, cause: err})
				continue
			}
			budget -= int64(len(rec.Raw))
			out = append(out, Message{Seq: seq, GUID: rec.GUID.String(), Source: rec.Source, Received: rec.Received, Raw: rec.Raw})
		}
		return nil
	})
	if err != nil {
		return out, err
	}
	for _, u := range bad {
		if err := s.quarantine(dest, u); err != nil {
			return out, err
		}
	}
	return out, nil
}

func readMessage(txn *badger.Txn, seg, seq uint64) (*record, error) {
	mi, err := txn.Get(msgKey(seg, seq))
	if err != nil {
		return nil, fmt.Errorf("missing: %w", err)
	}
	v, err := mi.ValueCopy(nil)
	if err != nil {
		return nil, err
	}
	return decodeRecord(v)
}

type unreadable struct {
	seq, seg uint64
	cause    error
}

// quarantine moves a queued message that cannot be read to dest's dead
// letters, with no content and a reason that says so, and syncs.
func (s *Spool) quarantine(dest string, u unreadable) error {
	reason := fmt.Sprintf("unreadable in the spool (%v): its content is lost; ask the sender to resend message %d's original if it was acknowledged (see docs/power-loss.md)", u.cause, u.seq)
	s.log.Error("spool message unreadable; moved to the dead letters so the queue goes on", "destination", dest, "seq", u.seq, "err", u.cause)
	rec := &record{Seq: u.seq, Dests: []string{dest}, Reason: reason, Received: s.now()}
	dv := rec.encode()
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		return errReopening
	}
	found := false
	var evBytes int64
	err := s.update(func(txn *wtxn) error {
		qk := namedSeqKey(famQueue, dest, u.seq)
		item, err := txn.Get(qk)
		if err != nil {
			return nil // delivered or moved meanwhile
		}
		found = true
		if evBytes, err = s.releaseTrace(txn, item, dest, true); err != nil {
			return err
		}
		if err := txn.Set(namedSeqKey(famDead, dest, u.seq), dv); err != nil {
			return err
		}
		return txn.Delete(qk)
	})
	if err != nil {
		return fmt.Errorf("spool: move unreadable message %d of %s to the dead letters: %w", u.seq, dest, err)
	}
	if !found {
		return nil
	}
	// The accounting follows the commit; a failed sync faults the spool,
	// whose re-open recounts from disk.
	s.accountRelease(dest, u.seg, true, int64(len(dv)), evBytes)
	if err := s.syncLogs(false); err != nil {
		return fmt.Errorf("spool: move unreadable message %d of %s to the dead letters: %w", u.seq, dest, err)
	}
	return nil
}

// Delivered records that dest has taken message seq. It is not fsynced on
// its own: a crash may forget it, and the message is then offered again with
// the same GUID (delivery is at least once).
func (s *Spool) Delivered(dest string, seq uint64) error {
	return s.release(dest, seq, "", 0)
}

// Kill moves message seq of dest to its dead-letter store with the reason.
func (s *Spool) Kill(dest string, seq uint64, reason string, attempts int) error {
	if reason == "" {
		reason = "dead"
	}
	return s.release(dest, seq, reason, attempts)
}

func (s *Spool) release(dest string, seq uint64, deadReason string, attempts int) error {
	// Held across both of Kill's steps, so that a re-open (which removes a
	// dead-letter copy standing beside its queued original) cannot fall
	// between them.
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		return errReopening
	}
	var deadSize int64
	if deadReason != "" {
		var err error
		if deadSize, err = s.copyToDead(dest, seq, deadReason, attempts); err != nil || deadSize == 0 {
			return err
		}
	}
	qk := namedSeqKey(famQueue, dest, seq)
	var seg uint64
	var evBytes int64
	found := false
	err := s.update(func(txn *wtxn) error {
		item, err := txn.Get(qk)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if seg, err = segOf(item); err != nil {
			return err
		}
		found = true
		if evBytes, err = s.releaseTrace(txn, item, dest, deadReason != ""); err != nil {
			return err
		}
		return txn.Delete(qk)
	})
	if err != nil {
		return fmt.Errorf("spool: release message %d of %s: %w", seq, dest, err)
	}
	if !found {
		return nil
	}
	s.accountRelease(dest, seg, deadReason != "", deadSize, evBytes)
	return nil
}

// copyToDead is the first of Kill's two steps: it writes the dead-letter
// copy beside the still queued original and makes it durable (a large
// message's copy lives in the value log, which nothing else syncs). Only
// then does release drop the queue entry, after which the segment holding
// the original may be dropped at any moment. A cut between the steps
// leaves both, and Open removes the copy (dropHalfKills). It returns the
// copy's size, or 0 when seq is no longer queued for dest. dbMu is held.
func (s *Spool) copyToDead(dest string, seq uint64, reason string, attempts int) (int64, error) {
	var size int64
	big := false
	err := s.update(func(txn *wtxn) error {
		item, err := txn.Get(namedSeqKey(famQueue, dest, seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		seg, err := segOf(item)
		if err != nil {
			return err
		}
		rec, err := readMessage(txn.Txn, seg, seq)
		if err != nil {
			return fmt.Errorf("message %d for dead letters: %w", seq, err)
		}
		rec.Reason, rec.Attempts, rec.Dests = reason, attempts, []string{dest}
		dv := rec.encode()
		size, big = int64(len(dv)), len(dv) >= largeValue
		return txn.Set(namedSeqKey(famDead, dest, seq), dv)
	})
	if err != nil {
		return 0, fmt.Errorf("spool: copy message %d of %s to the dead letters: %w", seq, dest, err)
	}
	if size == 0 {
		return 0, nil
	}
	if err := s.syncLogs(big); err != nil {
		return 0, fmt.Errorf("spool: sync the dead-letter copy of message %d of %s: %w", seq, dest, err)
	}
	return size, nil
}

// accountRelease follows a released queue entry in the counters.
func (s *Spool) accountRelease(dest string, seg uint64, dead bool, deadSize, traceBytes int64) {
	s.mu.Lock()
	s.traceBytes += traceBytes
	si := s.seg(seg)
	si.pending--
	s.queued[dest]--
	if dead {
		s.dead[dest]++
		s.deadBytes += deadSize
	} else {
		s.delivered[dest]++
	}
	kick := si.pending <= 0 && seg < s.curSeg
	s.mu.Unlock()
	if kick {
		select {
		case s.gcKick <- struct{}{}:
		default:
		}
	}
}

// view runs fn in a read transaction of the open DB.
func (s *Spool) view(fn func(txn *badger.Txn) error) error {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		return errReopening
	}
	return s.db.View(fn)
}
