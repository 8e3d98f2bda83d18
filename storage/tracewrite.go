package storage

import (
	"time"

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
// transaction. A message with destinations writes none: its header rides in
// its queue entries (queueValue) and becomes a key of its own when the
// first of them is released (releaseTrace), so that ingest writes no key
// that a message without a trace would not (docs/design.md, "Message trace
// and retention"). An undeliverable message writes its header and index
// here; a dead letter queued again, a "retried" event on its (unchanged)
// GUID and its header pointed at the new copy; an undeliverable message
// routed again, its header with the new route; a replay, a "replayed"
// event on the original.
func (g *group) traceEntries(e Entry, w *pendingWrite, rec *record) []*badger.Entry {
	var kvs []traceKV
	switch {
	case e.deadKey != nil:
		dest, _ := nameOf(e.deadKey)
		kvs = append(kvs, g.s.newEvent(e.GUID, traceEvent{At: g.now, What: EvRetried, Dest: dest}))
		if h := g.head(e.GUID); h != nil {
			h.Seq, h.Seg = rec.Seq, w.seg
			kvs = append(kvs, traceKV{traceKey(h.GUID), h.encode()})
		}
	case e.rerouted:
		// An undeliverable message routed again: its header, a key since
		// its first commit, takes the new route and place and keeps its
		// control ID, type and receive time (the entry knows none of them).
		h := g.head(e.GUID)
		if h == nil {
			h = newHead(e, g.now) // pruned meanwhile
		}
		h.Route, h.Seq, h.Seg = e.Dests, rec.Seq, w.seg
		kvs = append(kvs, headEntries(h)...)
	case len(e.Dests) == 0:
		h := newHead(e, g.now)
		h.Seq = rec.Seq
		kvs = append(kvs, headEntries(h)...)
	case e.ReplayOf != uuid.Nil:
		kvs = append(kvs, g.s.newEvent(e.ReplayOf, traceEvent{At: g.now, What: EvReplayed, Dest: e.Dests[0], Detail: e.GUID.String()}))
	}
	out := make([]*badger.Entry, 0, len(kvs))
	for _, kv := range kvs {
		w.trace = append(w.trace, kv.k)
		w.traceBytes += kv.size()
		out = append(out, badger.NewEntry(kv.k, kv.v))
	}
	return out
}

// newHead is the trace header of a message admitted at now. Where the
// message is (Seq, Seg) is filled in by whoever stores the header: a queue
// entry's key and value say it (queuedHead).
func newHead(e Entry, now time.Time) *traceHead {
	return &traceHead{
		GUID: e.GUID, Received: now, Size: len(e.Raw), Source: e.Source, Peer: e.Peer,
		ControlID: e.ControlID, Type: e.Type, ACK: "AA", Route: e.Dests, ReplayOf: e.ReplayOf,
	}
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

// releaseTrace writes, in the release's own transaction, the event that
// says what became of message seq for dest and, at the first release of a
// message whose header rode in its queue entries, that header and its
// control-ID index. It returns their estimated size.
func (s *Spool) releaseTrace(txn *wtxn, item *badger.Item, dest string, dead bool) (int64, error) {
	if !s.tracing() {
		return 0, nil
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return 0, err
	}
	if len(v) < queueValueLen {
		return 0, nil // queued before traces existed
	}
	var g uuid.UUID
	copy(g[:], v[16:32])
	ev := traceEvent{At: s.now(), What: EvDelivered, Dest: dest}
	if dead {
		ev.What = EvDead
	}
	kvs := []traceKV{s.newEvent(g, ev)}
	h, err := queuedHead(item.Key(), v)
	if err != nil {
		s.log.Warn("trace header in a queue entry unreadable; the message's trace will lack it", "guid", g.String(), "err", err)
	}
	if h != nil {
		// Another destination's release may have written it already (and a
		// prune removed it since), or a salvage a fuller one: never overwrite.
		first, err := headless(inTxn(txn.Txn), h, dest)
		if err != nil {
			return 0, err
		}
		if first {
			kvs = append(kvs, headEntries(h)...)
		}
	}
	var n int64
	for _, kv := range kvs {
		if err := txn.Set(kv.k, kv.v); err != nil {
			return 0, err
		}
		n += kv.size()
	}
	return n, nil
}
