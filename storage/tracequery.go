package storage

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"
)

// Trace limits: one answer holds at most MaxTraceLimit messages (a message
// is about 300 bytes of JSON plus 100 per event), DefaultTraceLimit when
// no limit is given.
const (
	DefaultTraceLimit = 100
	MaxTraceLimit     = 1000
)

// TraceQuery selects traces: by ID (a GUID, or a control ID that may match
// several messages), or by receive time and filters.
type TraceQuery struct {
	ID     string    `json:"id,omitempty"`
	Since  time.Time `json:"since,omitzero"`
	Until  time.Time `json:"until,omitzero"`
	Source string    `json:"source,omitempty"`
	Dest   string    `json:"dest,omitempty"`
	Type   string    `json:"type,omitempty"`
	State  string    `json:"state,omitempty"`
	Limit  int       `json:"limit,omitempty"`
}

// TraceStates are the states --state accepts.
var TraceStates = []string{"queued", "delivered", "dead", "purged", "undeliverable", "eaten", "refused"}

// TraceResult is `hl7edge trace --json` (docs/mqtt-api.md, trace).
type TraceResult struct {
	Messages []MessageTrace `json:"messages"`
	// More says the limit cut the answer short.
	More bool `json:"more,omitempty"`
}

// MessageTrace is where one message went. It holds no field content but
// MSH-9 (type) and MSH-10 (control ID).
type MessageTrace struct {
	GUID         string       `json:"guid"`
	ControlID    string       `json:"control_id"`
	Type         string       `json:"type"`
	Source       string       `json:"source"`
	Peer         string       `json:"peer,omitempty"`
	Size         int          `json:"size"`
	ReceivedAt   time.Time    `json:"received_at"`
	ACK          string       `json:"ack"`
	ReplayOf     string       `json:"replay_of,omitempty"`
	Route        string       `json:"route"` // "destinations", "undeliverable", "rubbish:NAME" or "refused"
	Destinations []TraceDest  `json:"destinations"`
	Events       []TraceEvent `json:"events"`
}

// TraceDest is one destination's part of a message's trace.
type TraceDest struct {
	Name        string     `json:"name"`
	State       string     `json:"state"` // queued, delivered, dead, purged
	Attempts    int        `json:"attempts"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
}

// TraceEvent is one thing that happened to a message.
type TraceEvent struct {
	At      time.Time `json:"at"`
	What    string    `json:"what"`
	Dest    string    `json:"dest,omitempty"`
	Lane    int       `json:"lane,omitempty"`
	Outcome string    `json:"outcome,omitempty"`
	Detail  string    `json:"detail,omitempty"`
}

// ErrBadQuery: a trace or replay request that cannot be answered as asked.
var ErrBadQuery = errors.New("bad request")

// Trace answers q.
func (s *Spool) Trace(q TraceQuery) (TraceResult, error) {
	res := TraceResult{Messages: []MessageTrace{}}
	switch {
	case q.Limit == 0:
		q.Limit = DefaultTraceLimit
	case q.Limit < 0 || q.Limit > MaxTraceLimit:
		return res, fmt.Errorf("%w: limit %d is outside 1..%d; narrow the range instead", ErrBadQuery, q.Limit, MaxTraceLimit)
	}
	if q.State != "" && !slices.Contains(TraceStates, q.State) {
		return res, fmt.Errorf("%w: state %q: use one of %v", ErrBadQuery, q.State, TraceStates)
	}
	if q.ID == "" && q.Since.IsZero() {
		return res, fmt.Errorf("%w: give a message ID (GUID or control ID) or a start time (since)", ErrBadQuery)
	}
	if q.Until.IsZero() {
		q.Until = s.now().Add(time.Minute)
	}
	err := s.view(func(txn *badger.Txn) error {
		return s.eachHead(txn, q, func(h *traceHead) (bool, error) {
			mt, err := buildTrace(txn, h)
			if err != nil {
				return false, err
			}
			if !q.matches(mt) {
				return true, nil
			}
			if len(res.Messages) == q.Limit {
				res.More = true
				return false, nil
			}
			res.Messages = append(res.Messages, mt)
			return true, nil
		})
	})
	if err != nil {
		return res, fmt.Errorf("spool: read traces: %w", err)
	}
	return res, nil
}

// eachHead calls fn with each trace header q selects by ID or time, in
// receive order, until fn says stop: the stored headers and those still
// riding in queue entries (queuedHeads).
func (s *Spool) eachHead(txn *badger.Txn, q TraceQuery, fn func(*traceHead) (bool, error)) error {
	if g, err := uuid.Parse(q.ID); err == nil && q.ID != "" {
		h, err := readHead(txn, g)
		if err != nil {
			return err
		}
		if h == nil {
			queued, err := queuedHeads(txn, headFilter{guid: func(id uuid.UUID) bool { return id == g }}, 1)
			if err != nil || len(queued) == 0 {
				return err
			}
			h = queued[0]
		}
		_, err = fn(h)
		return err
	}
	queued, err := queuedHeads(txn, headFilter{head: q.mayMatchQueued}, q.Limit+min(q.Limit, 1))
	if err != nil {
		return err
	}
	fn, flush := mergeQueued(queued, fn)
	if q.ID != "" {
		// One day's bucket at a time, over the days traces are kept.
		now := s.now()
		for day := traceDay(now.Add(-s.cfg.traceFor()).Add(-24 * time.Hour)); day <= traceDay(now)+1; day++ {
			if more, err := headsIn(txn, traceCtlPrefix(q.ID, day), nil, nil, fn); err != nil || !more {
				return err
			}
		}
		return flush()
	}
	// By time: the header keys are time-ordered GUIDs (newGUID); the exact
	// receive time is checked by the caller's filter.
	if err := headsByTime(txn, guidFloor(q.Since), guidFloor(q.Until.Add(time.Millisecond)), fn); err != nil {
		return err
	}
	return flush()
}

// mayMatchQueued says whether the header of a message queued for every
// destination may match q: such a message's destinations are all
// "queued", so every filter can be decided from the header alone.
func (q TraceQuery) mayMatchQueued(h *traceHead) bool {
	if q.ID != "" && h.ControlID != clip(q.ID, maxControlID) {
		return false
	}
	if q.Source != "" && h.Source != q.Source || q.Type != "" && h.Type != q.Type {
		return false
	}
	if !q.Since.IsZero() && h.Received.Before(q.Since) || !q.Until.IsZero() && !h.Received.Before(q.Until) {
		return false
	}
	if q.State != "" && q.State != "queued" {
		return false
	}
	return q.Dest == "" || slices.Contains(h.Route, q.Dest)
}

// headsByTime calls fn with each header whose GUID is from from to before
// to, oldest first, until fn says stop. Header keys are newest first
// (traceKey), so this walks them backwards.
func headsByTime(txn *badger.Txn, from, to uuid.UUID, fn func(*traceHead) (bool, error)) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{famTrace}, Reverse: true})
	defer it.Close()
	for it.Seek(traceKey(from)); it.Valid(); it.Next() {
		item := it.Item()
		if len(item.Key()) != 17 {
			continue
		}
		g := headGUID(item.Key())
		if bytes.Compare(g[:], to[:]) >= 0 {
			return nil
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		h, err := decodeTraceHead(g, v)
		if err != nil {
			return err
		}
		if more, err := fn(h); err != nil || !more {
			return err
		}
	}
	return nil
}

// headsIn calls fn with the header of each key under prefix from start
// (nil: the first) to before end (nil: the last), each key ending in a
// GUID; false once fn said stop.
func headsIn(txn *badger.Txn, prefix, start, end []byte, fn func(*traceHead) (bool, error)) (bool, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
	defer it.Close()
	if start == nil {
		start = prefix
	}
	for it.Seek(start); it.Valid(); it.Next() {
		k := it.Item().Key()
		if end != nil && bytes.Compare(k, end) >= 0 {
			return true, nil
		}
		if len(k) < 17 {
			continue
		}
		var g uuid.UUID
		copy(g[:], k[len(k)-16:])
		h, err := readHead(txn, g)
		if err != nil {
			return false, err
		}
		if h == nil {
			continue // pruned between index and header
		}
		if more, err := fn(h); err != nil || !more {
			return false, err
		}
	}
	return true, nil
}

func readHead(txn *badger.Txn, g uuid.UUID) (*traceHead, error) {
	item, err := txn.Get(traceKey(g))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, err
	}
	return decodeTraceHead(g, v)
}

// matches applies q's filters to a built trace.
func (q TraceQuery) matches(mt MessageTrace) bool {
	if q.Source != "" && mt.Source != q.Source || q.Type != "" && mt.Type != q.Type {
		return false
	}
	if !q.Since.IsZero() && mt.ReceivedAt.Before(q.Since) || !q.Until.IsZero() && !mt.ReceivedAt.Before(q.Until) {
		return false
	}
	okDest, okState := q.Dest == "", q.State == ""
	switch {
	case mt.Route == "undeliverable", mt.Route == "refused":
		okState = okState || q.State == mt.Route
	case mt.Route != "destinations":
		okState = okState || q.State == "eaten"
		okDest = okDest || mt.Route == "rubbish:"+q.Dest
	}
	for _, d := range mt.Destinations {
		if (q.Dest == "" || d.Name == q.Dest) && (q.State == "" || d.State == q.State) {
			okDest, okState = true, true
		}
	}
	return okDest && okState
}

// buildTrace reads a message's events and makes its trace.
func buildTrace(txn *badger.Txn, h *traceHead) (MessageTrace, error) {
	mt := MessageTrace{
		GUID: h.GUID.String(), ControlID: h.ControlID, Type: h.Type, Source: h.Source, Peer: h.Peer,
		Size: h.Size, ReceivedAt: h.Received.UTC(), ACK: h.ACK, Route: "destinations", Destinations: []TraceDest{},
		Events: []TraceEvent{{At: h.Received.UTC(), What: EvReceived}},
	}
	if h.ReplayOf != uuid.Nil {
		mt.ReplayOf = h.ReplayOf.String()
	}
	switch {
	case h.ACK != "AA":
		mt.Route = "refused"
		mt.Events = append(mt.Events, TraceEvent{At: h.Received.UTC(), What: EvRefused, Outcome: h.ACK})
	case h.Bin != "":
		mt.Route = "rubbish:" + h.Bin
		mt.Events = append(mt.Events, TraceEvent{At: h.Received.UTC(), What: EvEaten, Dest: h.Bin})
	case len(h.Route) == 0:
		mt.Route = "undeliverable"
		mt.Events = append(mt.Events, TraceEvent{At: h.Received.UTC(), What: EvUndeliverable})
	}
	for _, d := range h.Route {
		mt.Destinations = append(mt.Destinations, TraceDest{Name: d, State: "queued"})
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: eventPrefix(h.GUID)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return mt, err
		}
		ev, err := decodeTraceEvent(it.Item().Key(), v)
		if err != nil {
			continue // one torn event must not hide the rest
		}
		mt.apply(ev)
	}
	return mt, nil
}

// apply adds one event to the trace and follows it in its destination's state.
func (mt *MessageTrace) apply(ev traceEvent) {
	at := ev.At.UTC()
	mt.Events = append(mt.Events, TraceEvent{At: at, What: ev.What, Dest: ev.Dest, Lane: ev.Lane, Outcome: ev.Outcome, Detail: ev.Detail})
	i := slices.IndexFunc(mt.Destinations, func(d TraceDest) bool { return d.Name == ev.Dest })
	if i < 0 {
		return
	}
	d := &mt.Destinations[i]
	switch ev.What {
	case EvAttempt:
		d.Attempts++
		d.LastError = ev.Outcome
	case EvDelivered:
		d.Attempts++
		d.State, d.DeliveredAt = "delivered", &at
	case EvDead:
		d.State = "dead"
	case EvRetried:
		d.State = "queued"
	case EvPurged:
		d.State = "purged"
	}
}
