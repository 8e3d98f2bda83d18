package storage

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"
)

// restoreTraces writes the salvaged spool's traces into the fresh one, so
// "where did message X go" answers after a salvage as before it. It runs
// after the re-queue: a message queued again points its header at its new
// copy; any other points at none (Seq and Seg 0), because its old number
// may now be another message's and a replay would send that one instead.
// Index keys and events come across only with a readable header: alone,
// no query reaches them and no prune removes them.
func restoreTraces(sp *Spool, got *salvagedSpool, rep *SalvageReport) error {
	if !sp.tracing() || len(got.traces) == 0 {
		return nil
	}
	heads := salvagedHeads(got.traces, rep)
	if err := sp.view(func(txn *badger.Txn) error {
		// A re-queued message's header rides in its new queue entries.
		requeued, err := queuedHeads(txn, headFilter{guid: func(g uuid.UUID) bool { return heads[g] != nil }}, 0)
		if err != nil {
			return err
		}
		for _, h := range heads {
			h.Seq, h.Seg = 0, 0
		}
		for _, now := range requeued {
			heads[now.GUID].Seq, heads[now.GUID].Seg = now.Seq, now.Seg
		}
		return nil
	}); err != nil {
		return fmt.Errorf("salvage: read the re-queued messages' traces: %w", err)
	}
	wb := sp.newBatch()
	defer wb.Cancel()
	var size int64
	set := func(kv traceKV) error {
		size += kv.size()
		return wb.Set(kv.k, kv.v)
	}
	for _, h := range heads {
		if err := set(traceKV{traceKey(h.GUID), h.encode()}); err != nil {
			return fmt.Errorf("salvage: write traces: %w", err)
		}
	}
	for k, v := range got.traces {
		if g, ok := traceGUIDOf([]byte(k)); ok && k[0] != famTrace && k[0] != famTraceV1 && heads[g] != nil {
			if err := set(traceKV{[]byte(k), v}); err != nil {
				return fmt.Errorf("salvage: write traces: %w", err)
			}
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("salvage: write traces: %w", err)
	}
	if err := sp.syncLogs(true); err != nil {
		return fmt.Errorf("salvage: write traces: %w", err)
	}
	sp.mu.Lock()
	sp.traceBytes += size
	sp.mu.Unlock()
	rep.Traces = len(heads)
	return nil
}

// salvagedHeads decodes the salvaged trace headers, listing those it cannot
// read among the report's problems.
func salvagedHeads(traces map[string][]byte, rep *SalvageReport) map[uuid.UUID]*traceHead {
	heads := map[uuid.UUID]*traceHead{}
	for k, v := range traces {
		kb := []byte(k)
		if kb[0] != famTrace && kb[0] != famTraceV1 {
			continue
		}
		g, ok := traceGUIDOf(kb)
		if !ok {
			continue
		}
		h, err := decodeTraceHead(g, v)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("trace of message %s: %v", g, err))
			continue
		}
		heads[g] = h
	}
	return heads
}

// traceGUIDOf is the GUID a trace key belongs to: a header's and an
// event's follows the family byte, an index key's ends it.
func traceGUIDOf(k []byte) (uuid.UUID, bool) {
	var g uuid.UUID
	switch {
	case (k[0] == famTrace || k[0] == famTraceV1) && len(k) == 17:
		g = headGUID(k)
	case k[0] == famEvent && len(k) == 29:
		copy(g[:], k[1:17])
	case k[0] == famTraceCtl && len(k) >= 22:
		copy(g[:], k[len(k)-16:])
	default:
		return g, false
	}
	return g, true
}

// queuedTrace keeps the trace header a salvaged queue entry carries, as
// the header key and index it would have become at its release, while it
// is headless in the salvaged spool (has says which keys that holds): a
// stored header is later and wins, and a destination with no queue entry
// left had it written as a key, which is gone because it was pruned.
func (got *salvagedSpool) queuedTrace(key, v []byte, has func([]byte) (bool, error)) {
	h, err := queuedHead(key, v)
	if err != nil || h == nil {
		return
	}
	dest, _ := nameOf(key)
	if ok, _ := headless(has, h, dest); !ok {
		return
	}
	for _, kv := range headEntries(h) {
		got.traces[string(kv.k)] = kv.v
	}
}
