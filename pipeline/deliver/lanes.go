package deliver

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/vocab/backoff"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// Lanes. With Options.Lanes > 1 a worker keeps one rule: a message is handed
// to a lane only when every earlier message with the same key is delivered,
// dead, or already queued in that same lane. Each lane delivers its messages
// one at a time in spool order, retrying its first message with its own
// back-off, so a patient's messages arrive in the order they were received,
// while different patients' messages travel side by side.
//
// Nothing about lanes is stored. The spool's queue keeps one key per message
// still owed ("q" keys, deleted on delivery or dead-lettering), so after a
// crash the undelivered messages of each key are exactly the tail of that
// key's messages, and dispatching them again in spool order rebuilds a
// valid assignment: which lane a key used before does not matter.

// laneDepth is how many messages a lane holds, the one in flight included.
// More than one keeps a lane busy while the dispatcher reads on; a few keep
// a key on its lane while it has work, and keep memory small.
const laneDepth = 4

// window bounds the messages read from the spool and not yet on a lane:
// those waiting behind their key's full lane, and the ones after them. It
// is how far other keys can overtake a key held by a lane in back-off.
const (
	windowMessages = 512
	windowBytes    = 4 << 20
)

// laneState is what a lane is doing, for health.
type laneState int32

const (
	laneIdle    laneState = iota
	laneBusy              // a request in flight
	laneBackoff           // waiting before it retries its first message
)

// lane is one in-order stream of a destination.
type lane struct {
	idx   int
	b     *backoff.Backoff // used only by the lane's own goroutine
	kick  chan struct{}    // operator's "retry now"
	work  chan struct{}    // the dispatcher queued a message
	state atomic.Int32

	attempt int  // failed attempts of the first message; the lane's goroutine only
	failing bool // guarded by Worker.mu
	// troubled mirrors failing for the dispatcher, which steers new keys
	// away from a lane whose first message keeps failing.
	troubled atomic.Bool

	queue []item // guarded by dispatcher.mu; queue[0] is in flight or next
}

func newLane(idx int, o Options) *lane {
	b := backoff.New(o.MaxBackoff)
	if o.MinBackoff > 0 {
		b.Min = o.MinBackoff
	}
	return &lane{idx: idx, b: b, kick: make(chan struct{}, 1), work: make(chan struct{}, 1)}
}

func (l *lane) setState(s laneState) { l.state.Store(int32(s)) }

type item struct {
	m   flow.Message
	key string
}

// KeyAt reads the lane key at path p (for example PID-3.1). A message that
// does not parse or lacks the field has the empty key, which is one key like
// any other: all such messages share one lane and keep their order.
func KeyAt(p hl7.Path) func(raw []byte) string {
	return func(raw []byte) string {
		m, err := hl7.Parse(raw)
		if err != nil {
			return ""
		}
		v, _ := m.GetPath(p)
		return v
	}
}

// dispatcher reads the destination's queue in spool order, once, and hands
// each message to a lane.
type dispatcher struct {
	w     *Worker
	key   func([]byte) string
	freed chan struct{} // a lane finished a message: there may be room

	mu      sync.Mutex
	owner   map[string]*lane // the lane of each key with messages queued there
	refs    map[string]int   // how many
	pending []item           // read, not yet on a lane, in spool order
	bytes   int              // of pending
	readTo  uint64           // the last seq read from the spool
}

func newDispatcher(w *Worker) *dispatcher {
	key := w.o.LaneKey
	if key == nil {
		key = func([]byte) string { return "" }
	}
	return &dispatcher{w: w, key: key, freed: make(chan struct{}, 1), owner: map[string]*lane{}, refs: map[string]int{}}
}

// runLanes runs the dispatcher and one goroutine per lane until ctx ends or
// the spool cannot record an outcome.
func (w *Worker) runLanes(ctx context.Context) error {
	d := newDispatcher(w)
	// A new run reads the queue from its start, so nothing a previous run
	// had handed out may stay on a lane.
	for _, l := range w.lanes {
		clear(l.queue)
		l.queue = l.queue[:0]
		l.setState(laneIdle)
	}
	w.o.Health.SetLanes(d.stat)
	if p, _ := w.pausedCh(); !p {
		w.o.Health.SetState(health.Up)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(w.lanes)+1)
	var wg sync.WaitGroup
	for _, l := range w.lanes {
		wg.Go(func() { errs <- d.runLane(ctx, l) })
	}
	wg.Go(func() { errs <- d.run(ctx) })
	var first error
	for range len(w.lanes) + 1 {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	wg.Wait()
	return first
}

// run dispatches whenever messages arrive or a lane makes room.
func (d *dispatcher) run(ctx context.Context) error {
	w := d.w
	b := backoff.New(w.o.MaxBackoff)
	if w.o.MinBackoff > 0 {
		b.Min = w.o.MinBackoff
	}
	for {
		w.beat()
		if ctx.Err() != nil {
			return nil
		}
		if p, resume := w.pausedCh(); p {
			w.waitFor(ctx, nil, resume, beatEvery)
			continue
		}
		if err := d.fill(); err != nil {
			w.o.Health.Fail("", err.Error())
			w.o.Log.Error("destination cannot read its queue", "destination", w.name, "err", err)
			w.waitFor(ctx, nil, nil, b.Next())
			continue
		}
		b.Reset()
		w.waitFor(ctx, d.freed, w.q.Wait(w.name), beatEvery)
	}
}

// fill tops the window up from the spool and then places what it can.
func (d *dispatcher) fill() error {
	for {
		d.mu.Lock()
		want := windowMessages - len(d.pending)
		from, room := d.readTo, want > 0 && d.bytes < windowBytes
		d.mu.Unlock()
		if !room {
			break
		}
		batch, err := d.w.q.Next(d.w.name, from, min(want, 64))
		if err != nil {
			return err
		}
		d.mu.Lock()
		for _, m := range batch {
			d.pending = append(d.pending, item{m: m, key: d.key(m.Raw)})
			d.bytes += len(m.Raw)
			d.readTo = m.Seq
		}
		d.mu.Unlock()
		if len(batch) == 0 {
			break
		}
	}
	d.mu.Lock()
	d.placeLocked()
	d.mu.Unlock()
	return nil
}

// placeLocked walks the window in spool order and puts each message on its
// key's lane or, for a key with nothing queued, on the least loaded lane,
// preferring lanes not in back-off. A message that finds no room stays, and
// so does every later message with its key: that is what keeps each key's
// order.
func (d *dispatcher) placeLocked() {
	held := map[string]bool{}
	kept := d.pending[:0]
	for i, it := range d.pending {
		if !d.roomLocked() {
			kept = append(kept, d.pending[i:]...)
			break
		}
		var l *lane
		if !held[it.key] {
			l = d.chooseLocked(it.key)
		}
		if l == nil {
			held[it.key] = true
			kept = append(kept, it)
			continue
		}
		d.bytes -= len(it.m.Raw)
		d.enqueueLocked(l, it)
	}
	clear(d.pending[len(kept):])
	d.pending = kept
}

// roomLocked says whether any lane can take a message.
func (d *dispatcher) roomLocked() bool {
	for _, l := range d.w.lanes {
		if len(l.queue) < laneDepth {
			return true
		}
	}
	return false
}

// chooseLocked picks the lane for a message with key k, or nil when the
// lane it must go to is full.
func (d *dispatcher) chooseLocked(k string) *lane {
	lanes := d.w.lanes
	if l, ok := d.owner[k]; ok {
		if len(l.queue) < laneDepth {
			return l
		}
		return nil
	}
	var best *lane
	bestScore := 0
	for _, l := range lanes {
		score := len(l.queue)
		if score >= laneDepth {
			continue
		}
		if l.troubled.Load() {
			score += laneDepth // only when every other lane is full
		}
		if best == nil || score < bestScore {
			best, bestScore = l, score
		}
	}
	return best
}

func (d *dispatcher) enqueueLocked(l *lane, it item) {
	l.queue = append(l.queue, it)
	d.owner[it.key] = l
	d.refs[it.key]++
	select {
	case l.work <- struct{}{}:
	default:
	}
}

// runLane delivers lane l's messages one at a time, first in first out.
func (d *dispatcher) runLane(ctx context.Context, l *lane) error {
	w := d.w
	for {
		w.beat()
		if ctx.Err() != nil {
			return nil
		}
		if p, resume := w.pausedCh(); p {
			l.setState(laneIdle)
			w.waitFor(ctx, nil, resume, beatEvery)
			continue
		}
		d.mu.Lock()
		var m flow.Message
		have := len(l.queue) > 0
		if have {
			m = l.queue[0].m
		}
		d.mu.Unlock()
		if !have {
			l.setState(laneIdle)
			w.waitFor(ctx, nil, l.work, beatEvery)
			continue
		}
		ok, err := w.deliverOne(ctx, &m, l)
		if err != nil {
			return err
		}
		if ok {
			d.finish(l)
		}
	}
}

// finish takes a delivered or dead message off its lane and lets its key
// move to another lane once the lane holds no more of it.
func (d *dispatcher) finish(l *lane) {
	d.mu.Lock()
	it := l.queue[0]
	l.queue[0] = item{}
	l.queue = l.queue[1:]
	if d.refs[it.key]--; d.refs[it.key] <= 0 {
		delete(d.refs, it.key)
		delete(d.owner, it.key)
	}
	d.mu.Unlock()
	l.setState(laneIdle)
	select {
	case d.freed <- struct{}{}:
	default:
	}
}

// stat counts the lanes for health: busy with a request, waiting in
// back-off, or blocked (holding messages while the destination is paused).
func (d *dispatcher) stat() health.LaneStat {
	paused, _ := d.w.pausedCh()
	st := health.LaneStat{Lanes: len(d.w.lanes)}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.w.lanes {
		switch {
		case laneState(l.state.Load()) == laneBusy:
			st.Busy++
		case laneState(l.state.Load()) == laneBackoff:
			st.Backoff++
		case paused && len(l.queue) > 0:
			st.Blocked++
		}
	}
	return st
}
