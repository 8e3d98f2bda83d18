package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"
)

// A queue entry's value:
//
//	<seg:8> <received:8> <guid:16> [trace header]
//
// The trace header of a message still queued everywhere rides in its queue
// entries instead of a key of its own. Each key costs Badger a memtable
// insert, a log entry and its share of every compaction whatever its size,
// and the header and control-ID index were a fifth of ingest's CPU
// (docs/performance.md, "The header in the queue entry"); some 45 bytes
// more in a key written anyway cost next to nothing. The first release of the
// message (delivered, dead, quarantined) writes the header and its index as
// keys of their own, in the release's transaction, so the trace outlives
// the queue entry. Until then the queries read it from the queue
// (queuedHeads). "Received" is thus still in the message's own commit.
const queueValueLen = 32

// queueValue is a queue entry's value; head is the encoded trace header
// (nil when traces are off, or when the header is a key already).
func queueValue(seg uint64, received time.Time, g uuid.UUID, head []byte) []byte {
	v := make([]byte, 0, queueValueLen+len(head))
	v = binary.BigEndian.AppendUint64(v, seg)
	v = binary.BigEndian.AppendUint64(v, uint64(received.UnixNano()))
	v = append(v, g[:]...)
	return append(v, head...)
}

// queuedHeadVersion marks a queue entry's header. It leaves out what the
// queue entry says already (GUID, where the message is, when it came) and
// what a queued message's header always holds (AA, no rubbish bin): each
// byte here is written again by every compaction that carries the queue.
const queuedHeadVersion = 2

func (h *traceHead) encodeQueued() []byte {
	b := make([]byte, 0, 16+len(h.Source)+len(h.Peer)+len(h.ControlID)+len(h.Type)+16*len(h.Route))
	b = append(b, queuedHeadVersion)
	b = binary.AppendUvarint(b, uint64(h.Size))
	for _, s := range []string{h.Source, h.Peer, clip(h.ControlID, maxControlID), clip(h.Type, maxControlID)} {
		b = appendString(b, s)
	}
	return h.appendRoute(b)
}

// queuedHead decodes the trace header a queue entry (key, value) carries,
// pointed at where the message is; nil when it carries none.
func queuedHead(key, v []byte) (*traceHead, error) {
	if len(v) <= queueValueLen || len(key) < 9 {
		return nil, nil
	}
	p := v[queueValueLen:]
	if p[0] != queuedHeadVersion {
		return nil, fmt.Errorf("%w: queued trace header (version %d)", errCorrupt, p[0])
	}
	h := &traceHead{Seq: seqOf(key), Seg: binary.BigEndian.Uint64(v), ACK: "AA"}
	copy(h.GUID[:], v[16:32])
	h.Received = time.Unix(0, int64(binary.BigEndian.Uint64(v[8:16])))
	size, k := binary.Uvarint(p[1:])
	if k <= 0 {
		return nil, fmt.Errorf("%w: queued trace size", errCorrupt)
	}
	h.Size, p = int(size), p[1+k:]
	var ok bool
	for _, s := range []*string{&h.Source, &h.Peer, &h.ControlID, &h.Type} {
		if *s, p, ok = readString(p); !ok {
			return nil, fmt.Errorf("%w: queued trace field", errCorrupt)
		}
	}
	return h, h.readRoute(p)
}

// headFilter selects queued headers: by GUID before anything is decoded
// (nil: any), then by the decoded header (nil: any).
type headFilter struct {
	guid func(uuid.UUID) bool
	head func(*traceHead) bool
}

// queuedHeads are the headers of messages still to be written as keys
// (queued for every destination: headless) that f selects, oldest first.
// Each is read from the queue entry of its route's first destination, so
// no set of those seen is needed. With limit above 0 only the oldest limit
// are kept, so a query over a long queue holds no more than it can answer,
// and only those are looked up.
func queuedHeads(txn *badger.Txn, f headFilter, limit int) ([]*traceHead, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{famQueue}, PrefetchValues: false})
	defer it.Close()
	var sel headSelection
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		var h *traceHead
		err := item.Value(func(v []byte) error {
			if len(v) <= queueValueLen || f.guid != nil && !f.guid(uuid.UUID(v[16:32])) {
				return nil
			}
			var err error
			h, err = queuedHead(item.Key(), v)
			return err
		})
		if err != nil || h == nil {
			continue // an unreadable header is the queue's to report, at delivery
		}
		if dest, _ := nameOf(item.Key()); len(h.Route) == 0 || dest != h.Route[0] || f.head != nil && !f.head(h) {
			continue
		}
		sel.heads = append(sel.heads, candidate{h: h})
		if limit > 0 && len(sel.heads) > 4*limit {
			if err := sel.trim(txn, limit); err != nil {
				return nil, err
			}
		}
	}
	if err := sel.trim(txn, limit); err != nil {
		return nil, err
	}
	out := make([]*traceHead, len(sel.heads))
	for i, c := range sel.heads {
		out[i] = c.h
	}
	return out, nil
}

type candidate struct {
	h       *traceHead
	checked bool // known to be headless
}

type headSelection struct{ heads []candidate }

// trim sorts the candidates oldest first and keeps the oldest limit (all
// when limit is 0) that are headless: a message released for one
// destination is found through its stored header instead, or not at all
// once that was pruned.
func (sel *headSelection) trim(txn *badger.Txn, limit int) error {
	slices.SortFunc(sel.heads, func(a, b candidate) int { return bytes.Compare(a.h.GUID[:], b.h.GUID[:]) })
	kept := sel.heads[:0]
	for _, c := range sel.heads {
		if limit > 0 && len(kept) == limit {
			break
		}
		if !c.checked {
			ok, err := headless(inTxn(txn), c.h, c.h.Route[0])
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			c.checked = true
		}
		kept = append(kept, c)
	}
	sel.heads = kept
	return nil
}

// headless says whether h, a header read from its message's queue entry
// for dest, is the message's trace still to be written: there is no header
// key yet, and every other destination of its route still has its queue
// entry. Once one was released the header became a key (releaseTrace); if
// that key is gone the trace was pruned, and the copies the other queue
// entries carry must neither answer for it (their destinations' states
// would all say "queued") nor be written again at their release. has says
// whether the spool holds a key: the open one's (inTxn), or what a salvage
// read.
func headless(has func(k []byte) (bool, error), h *traceHead, dest string) (bool, error) {
	if ok, err := has(traceKey(h.GUID)); ok || err != nil {
		return false, err
	}
	for _, d := range h.Route {
		if d == dest {
			continue
		}
		if ok, err := has(namedSeqKey(famQueue, d, h.Seq)); !ok || err != nil {
			return false, err
		}
	}
	return true, nil
}

// inTxn is has for an open spool's transaction.
func inTxn(txn *badger.Txn) func(k []byte) (bool, error) {
	return func(k []byte) (bool, error) {
		_, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return false, nil
		}
		return err == nil, err
	}
}

// mergeQueued wraps fn so that the queued headers (oldest first) are
// passed to it in GUID order among the stored ones it is called with; call
// the returned flush after the last stored header.
func mergeQueued(queued []*traceHead, fn func(*traceHead) (bool, error)) (func(*traceHead) (bool, error), func() error) {
	stopped := false
	emit := func(until *uuid.UUID) (bool, error) {
		for len(queued) > 0 && !stopped && (until == nil || bytes.Compare(queued[0].GUID[:], until[:]) < 0) {
			h := queued[0]
			queued = queued[1:]
			more, err := fn(h)
			if err != nil || !more {
				stopped = true
				return false, err
			}
		}
		return !stopped, nil
	}
	merged := func(h *traceHead) (bool, error) {
		if more, err := emit(&h.GUID); err != nil || !more {
			return false, err
		}
		more, err := fn(h)
		if err != nil || !more {
			stopped = true
		}
		return more, err
	}
	flush := func() error {
		_, err := emit(nil)
		return err
	}
	return merged, flush
}
