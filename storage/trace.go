package storage

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Trace key space (docs/design.md, Message trace and retention). A trace holds where a
// message went, never what it said: identifiers, MSH-9 and MSH-10, names,
// times and outcome codes.
//
//	c <day:4> <control id> 0 <guid:16> control-ID index (empty value)
//	e <guid:16> <at:8> <n:4>           one event (attempt, delivered, dead...)
//	t <^guid:16>                       the message's trace header, under its
//	                                   GUID with every bit inverted; the GUID
//	                                   is time-ordered (newGUID), so this is
//	                                   also the time index, newest first
//
// A message's header rides in its queue entries, written in the same
// transaction as the message, and becomes the key above (with its index)
// in the transaction of its first release, beside the delivered or dead
// event (tracequeued.go); so each survives exactly what the message and the
// mark survive. An undeliverable message's header is a key from the start.
// Attempts and the rubbish bin's headers are written a little later, in
// batches (tracelazy.go).
//
// The families sort after every other (0xF3 and up): Badger compacts a
// level-0 table with every table its key range overlaps, and a trace key
// below the message keys would make each new table overlap every stored
// message, rewriting them all at each compaction. The headers, the largest
// trace keys, are the highest family and newest first, so a new table's
// range ends at the newest header and every older header lies above it:
// compaction leaves the header tables alone, as it does the older message
// keys at the low end (docs/performance.md, "What message traces and
// retention cost").
const (
	famTraceCtl = 0xF3
	famEvent    = 0xF4
	famTrace    = 0xF5
	// famTraceV1 held the headers, oldest first, before they moved to
	// famTrace; Open moves any it finds (moveOldHeads).
	famTraceV1 = 0xF1
)

// maxControlID bounds the control ID kept (HL7 allows 20 characters; 199
// in v2.7); longer ones are cut for the index and the header.
const maxControlID = 64

// Event names, as `hl7edge trace` prints them.
const (
	EvReceived      = "received"
	EvAttempt       = "attempt"
	EvDelivered     = "delivered"
	EvDead          = "dead"
	EvRetried       = "retried"
	EvPurged        = "purged"
	EvReplayed      = "replayed"
	EvUndeliverable = "undeliverable"
	EvEaten         = "eaten"
	EvRefused       = "refused"
)

// newGUID names a new message received at t: a version 7 UUID, whose
// first 48 bits are t in milliseconds and the rest random. The trace
// header's key is its GUID, so headers are written in time order, as the
// message keys are in sequence order: Badger appends them instead of
// rewriting old tables at each compaction (with random version 4 GUIDs,
// ingest with traces wrote 14% more to disk
// and ran slower), and the header keys are the
// time index a range query seeks in. Receivers only compare GUIDs; the
// time in one says when the gateway received the message, no more.
func newGUID(t time.Time) uuid.UUID {
	g := guidFloor(t)
	_, _ = rand.Read(g[8:])
	// The 12 bits after the version hold the time within the millisecond
	// (RFC 9562, 6.2 method 3), so GUIDs follow receive order to 244 ns and
	// a trace listed by GUID is listed in the order messages came.
	frac := uint16(int64(t.Nanosecond()%1e6) * 4096 / 1e6)
	binary.BigEndian.PutUint16(g[6:8], 0x7000|frac)
	g[8] = 0x80 | g[8]&0x3F // RFC 9562 variant
	return g
}

// guidFloor is the lowest version 7 GUID of t's millisecond.
func guidFloor(t time.Time) uuid.UUID {
	var g uuid.UUID
	binary.BigEndian.PutUint64(g[:8], uint64(max(t.UnixMilli(), 0))<<16)
	return g
}

// guidMillis reads the millisecond a version 7 GUID was made in.
func guidMillis(k []byte) int64 {
	return int64(binary.BigEndian.Uint64(k[:8]) >> 16)
}

func traceKey(g uuid.UUID) []byte {
	k := make([]byte, 17)
	k[0] = famTrace
	for i, b := range g {
		k[1+i] = ^b
	}
	return k
}

// headGUID is the GUID of a header key (traceKey), of either layout.
func headGUID(k []byte) uuid.UUID {
	var g uuid.UUID
	copy(g[:], k[1:17])
	if k[0] == famTrace {
		for i := range g {
			g[i] = ^g[i]
		}
	}
	return g
}

func traceCtlKey(ctl string, received time.Time, g uuid.UUID) []byte {
	k := traceCtlPrefix(ctl, traceDay(received))
	return append(k, g[:]...)
}

// traceCtlPrefix is where one day's messages of control ID ctl are
// indexed. Control IDs come in no order; bucketed by day, a new key lands
// among the current day's only, so compaction leaves older days' index
// tables alone, and a lookup seeks once per day traces are kept.
func traceCtlPrefix(ctl string, day uint32) []byte {
	k := binary.BigEndian.AppendUint32([]byte{famTraceCtl}, day)
	k = append(k, clip(ctl, maxControlID)...)
	return append(k, 0)
}

// traceDay is the day (since 1970, UTC) a message was received on.
func traceDay(t time.Time) uint32 {
	return uint32(max(t.Unix(), 0) / 86400)
}

func eventPrefix(g uuid.UUID) []byte { return append([]byte{famEvent}, g[:]...) }

func eventKey(g uuid.UUID, at time.Time, n uint32) []byte {
	k := binary.BigEndian.AppendUint64(eventPrefix(g), uint64(at.UnixNano()))
	return binary.BigEndian.AppendUint32(k, n)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// traceHead is what a trace header holds.
type traceHead struct {
	GUID      uuid.UUID
	Seq, Seg  uint64 // where the message itself is (Seg 0: not in a segment)
	Received  time.Time
	Size      int
	Source    string
	Peer      string
	ControlID string
	Type      string
	ACK       string
	Route     []string // destinations; empty: undeliverable
	Bin       string   // the rubbish bin that ate it
	ReplayOf  uuid.UUID
}

const traceVersion = 1

func (h *traceHead) encode() []byte {
	b := make([]byte, 0, 96+len(h.Source)+len(h.Peer)+len(h.ControlID)+len(h.Type))
	b = append(b, traceVersion)
	b = binary.BigEndian.AppendUint64(b, h.Seq)
	b = binary.BigEndian.AppendUint64(b, h.Seg)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Received.UnixNano()))
	b = binary.AppendUvarint(b, uint64(h.Size))
	for _, s := range []string{h.Source, h.Peer, clip(h.ControlID, maxControlID), clip(h.Type, maxControlID), h.ACK, h.Bin} {
		b = appendString(b, s)
	}
	return h.appendRoute(b)
}

func decodeTraceHead(g uuid.UUID, b []byte) (*traceHead, error) {
	if len(b) < 25 || b[0] != traceVersion {
		return nil, fmt.Errorf("%w: trace header (%d bytes)", errCorrupt, len(b))
	}
	h := &traceHead{GUID: g, Seq: binary.BigEndian.Uint64(b[1:9]), Seg: binary.BigEndian.Uint64(b[9:17])}
	h.Received = time.Unix(0, int64(binary.BigEndian.Uint64(b[17:25])))
	p := b[25:]
	size, k := binary.Uvarint(p)
	if k <= 0 {
		return nil, fmt.Errorf("%w: trace size", errCorrupt)
	}
	h.Size, p = int(size), p[k:]
	var ok bool
	for _, s := range []*string{&h.Source, &h.Peer, &h.ControlID, &h.Type, &h.ACK, &h.Bin} {
		if *s, p, ok = readString(p); !ok {
			return nil, fmt.Errorf("%w: trace field", errCorrupt)
		}
	}
	return h, h.readRoute(p)
}

// readRoute decodes the end of an encoded header: the route and the
// original's GUID of a replay.
func (h *traceHead) readRoute(p []byte) error {
	n, k := binary.Uvarint(p)
	if k <= 0 || n > 1024 {
		return fmt.Errorf("%w: trace route", errCorrupt)
	}
	p = p[k:]
	for range n {
		d, rest, ok := readString(p)
		if !ok {
			return fmt.Errorf("%w: trace route", errCorrupt)
		}
		h.Route, p = append(h.Route, d), rest
	}
	if len(p) == 16 {
		copy(h.ReplayOf[:], p)
	}
	return nil
}

func (h *traceHead) appendRoute(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(h.Route)))
	for _, d := range h.Route {
		b = appendString(b, d)
	}
	if h.ReplayOf != uuid.Nil {
		b = append(b, h.ReplayOf[:]...)
	}
	return b
}

// traceEvent is one stored event. Outcome is a code (AA, AE, AR, HTTP 503,
// EXCEPTION x, timeout, error), never a peer's text, which may quote the
// message.
type traceEvent struct {
	At      time.Time
	What    string
	Dest    string
	Lane    int
	Outcome string
	Detail  string // a GUID (replayed) or a limit's name; never content
}

func (e *traceEvent) encode() []byte {
	b := make([]byte, 0, 8+len(e.What)+len(e.Dest)+len(e.Outcome)+len(e.Detail))
	for _, s := range []string{e.What, e.Dest, e.Outcome, e.Detail} {
		b = appendString(b, s)
	}
	return binary.AppendUvarint(b, uint64(e.Lane))
}

func decodeTraceEvent(key, b []byte) (traceEvent, error) {
	var e traceEvent
	if len(key) != 29 {
		return e, fmt.Errorf("%w: event key", errCorrupt)
	}
	e.At = time.Unix(0, int64(binary.BigEndian.Uint64(key[17:25])))
	p := b
	var ok bool
	for _, s := range []*string{&e.What, &e.Dest, &e.Outcome, &e.Detail} {
		if *s, p, ok = readString(p); !ok {
			return e, fmt.Errorf("%w: event field", errCorrupt)
		}
	}
	lane, k := binary.Uvarint(p)
	if k <= 0 {
		return e, fmt.Errorf("%w: event lane", errCorrupt)
	}
	e.Lane = int(lane)
	return e, nil
}

// traceKV is one trace key and value to write.
type traceKV struct{ k, v []byte }

func (kv traceKV) size() int64 { return int64(len(kv.k)+len(kv.v)) + 16 }

// headEntries are the keys of one trace header: the header and its
// control-ID index.
func headEntries(h *traceHead) []traceKV {
	out := []traceKV{{traceKey(h.GUID), h.encode()}}
	if h.ControlID != "" {
		out = append(out, traceKV{traceCtlKey(h.ControlID, h.Received, h.GUID), nil})
	}
	return out
}

// newEvent is one event's key and value; n tells apart events of the same
// message at the same instant.
func (s *Spool) newEvent(g uuid.UUID, e traceEvent) traceKV {
	n := s.eventSeq.Add(1)
	return traceKV{eventKey(g, e.At, n), e.encode()}
}
