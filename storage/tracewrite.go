package storage

import (
	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"
)

// tracing says whether message traces are kept (spool.trace_retain not 0s).
func (s *Spool) tracing() bool { return s.cfg.traceFor() > 0 }

// stamp widens a segment's receive-time span to include t.
func (si *segInfo) stamp(t int64) {
	if si.first == 0 || t < si.first {
		si.first = t
	}
	si.last = max(si.last, t)
}

// traceEntries are the trace keys one admitted message writes in its own
// transaction: its header and indexes, or, for a dead letter queued again,
// a "retried" event on its (unchanged) GUID and its header pointed at the
// new copy; and for a replay, a "replayed" event on the original.
func (g *group) traceEntries(e Entry, w *pendingWrite, rec *record) []*badger.Entry {
	var kvs []traceKV
	if e.deadKey != nil {
		dest, _ := nameOf(e.deadKey)
		kvs = append(kvs, g.s.newEvent(e.GUID, traceEvent{At: g.now, What: EvRetried, Dest: dest}))
		if h := g.head(e.GUID); h != nil {
			h.Seq, h.Seg = rec.Seq, w.seg
			kvs = append(kvs, traceKV{traceKey(h.GUID), h.encode()})
		}
	} else {
		h := &traceHead{
			GUID: e.GUID, Seq: rec.Seq, Seg: w.seg, Received: g.now, Size: len(e.Raw),
			Source: e.Source, Peer: e.Peer, ControlID: e.ControlID, Type: e.Type, ACK: "AA",
			Route: e.Dests, ReplayOf: e.ReplayOf,
		}
		kvs = append(kvs, headEntries(h)...)
		if e.ReplayOf != uuid.Nil && len(e.Dests) > 0 {
			kvs = append(kvs, g.s.newEvent(e.ReplayOf, traceEvent{At: g.now, What: EvReplayed, Dest: e.Dests[0], Detail: e.GUID.String()}))
		}
	}
	out := make([]*badger.Entry, 0, len(kvs))
	for _, kv := range kvs {
		w.trace = append(w.trace, kv.k)
		w.traceBytes += kv.size()
		out = append(out, badger.NewEntry(kv.k, kv.v))
	}
	return out
}

// head reads a trace header inside the group's transaction; nil when there
// is none (trace pruned, or kept off when the message came).
func (g *group) head(id uuid.UUID) *traceHead {
	item, err := g.txn.Get(traceKey(id))
	if err != nil {
		return nil
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil
	}
	h, err := decodeTraceHead(id, v)
	if err != nil {
		return nil
	}
	return h
}

// guidOf reads the GUID a queue entry carries (none before traces existed).
func guidOf(item *badger.Item) (uuid.UUID, bool) {
	var g uuid.UUID
	ok := false
	_ = item.Value(func(v []byte) error {
		if len(v) >= 32 {
			copy(g[:], v[16:32])
			ok = true
		}
		return nil
	})
	return g, ok
}

// releaseEvent writes, in the release's own transaction, the event that
// says what became of message seq for dest.
func (s *Spool) releaseEvent(txn *wtxn, item *badger.Item, dest string, dead bool) (int64, error) {
	if !s.tracing() {
		return 0, nil
	}
	g, ok := guidOf(item)
	if !ok {
		return 0, nil
	}
	ev := traceEvent{At: s.now(), What: EvDelivered, Dest: dest}
	if dead {
		ev.What = EvDead
	}
	kv := s.newEvent(g, ev)
	if err := txn.Set(kv.k, kv.v); err != nil {
		return 0, err
	}
	return kv.size(), nil
}
