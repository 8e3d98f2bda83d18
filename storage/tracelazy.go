package storage

import (
	"time"

	"github.com/google/uuid"
)

// lazyTrace carries the trace records that need not be written with a
// message or a delivery mark (failed attempts, the rubbish bin's messages)
// to one writer that stores them in batches: a crash may lose the last
// fraction of a second of them, never a message or its delivery.
type lazyTrace struct {
	ch chan traceKV
}

const (
	lazyQueue = 4096
	lazyBatch = 512
	lazyEvery = 200 * time.Millisecond
)

// later queues kv for the lazy writer. It never blocks the caller: a
// delivery worker must not wait on its own trace. When the queue is full
// the record is dropped and said so.
func (s *Spool) later(kv traceKV) {
	select {
	case s.lazy.ch <- kv:
	default:
		s.log.Warn("trace record dropped: its writer is behind", "queued", lazyQueue)
	}
}

// lazyLoop is the lazy writer; it stops with the spool, writing what it holds.
func (s *Spool) lazyLoop() {
	defer s.wg.Done()
	t := time.NewTicker(lazyEvery)
	defer t.Stop()
	buf := make([]traceKV, 0, lazyBatch)
	for {
		select {
		case kv := <-s.lazy.ch:
			if buf = append(buf, kv); len(buf) >= lazyBatch {
				buf = s.writeLazy(buf)
			}
		case <-t.C:
			buf = s.writeLazy(buf)
		case <-s.stop:
			for {
				select {
				case kv := <-s.lazy.ch:
					buf = append(buf, kv)
				default:
					s.writeLazy(buf)
					return
				}
			}
		}
	}
}

// writeLazy stores kvs, unsynced (the next group commit's sync covers
// them), and returns buf emptied.
func (s *Spool) writeLazy(kvs []traceKV) []traceKV {
	if len(kvs) == 0 {
		return kvs
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	if s.db == nil {
		s.log.Warn("trace records dropped: the spool is being re-opened", "records", len(kvs))
		return kvs[:0]
	}
	wb := s.newBatch()
	defer wb.Cancel()
	var n int64
	for _, kv := range kvs {
		if err := wb.Set(kv.k, kv.v); err != nil {
			s.log.Warn("trace records dropped", "records", len(kvs), "err", err)
			return kvs[:0]
		}
		n += kv.size()
	}
	if err := wb.Flush(); err != nil {
		s.log.Warn("trace records dropped", "records", len(kvs), "err", err)
		return kvs[:0]
	}
	s.mu.Lock()
	s.traceBytes += n
	s.mu.Unlock()
	return kvs[:0]
}

// Attempt records a failed delivery attempt of message guid to dest on a
// lane: outcome is a code (AE, AR, HTTP 503, EXCEPTION x, timeout, error),
// never a peer's text. Written lazily.
func (s *Spool) Attempt(dest, guid string, lane int, outcome string) {
	g, err := uuid.Parse(guid)
	if err != nil || !s.tracing() {
		return
	}
	s.later(s.newEvent(g, traceEvent{At: s.now(), What: EvAttempt, Dest: dest, Lane: lane, Outcome: outcome}))
}

// Eaten records a message that a rubbish bin discarded: it was answered
// AA and never stored, so only its trace says where it went. Written lazily.
func (s *Spool) Eaten(e Entry, bin string) {
	if !s.tracing() {
		return
	}
	now := s.now()
	h := &traceHead{GUID: newGUID(now), Received: now, Size: len(e.Raw), Source: e.Source, Peer: e.Peer,
		ControlID: e.ControlID, Type: e.Type, ACK: "AA", Bin: bin}
	for _, kv := range headEntries(h) {
		s.later(kv)
	}
}

// Refused records a message answered AE or AR (ack) and not stored: the
// sender keeps it and may send it again. Written lazily.
func (s *Spool) Refused(e Entry, ack string) {
	if !s.tracing() {
		return
	}
	now := s.now()
	h := &traceHead{GUID: newGUID(now), Received: now, Size: len(e.Raw), Source: e.Source, Peer: e.Peer,
		ControlID: e.ControlID, Type: e.Type, ACK: ack}
	for _, kv := range headEntries(h) {
		s.later(kv)
	}
}
