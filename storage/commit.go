package storage

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"
)

// Append stores one message durably. It returns only after the commit that
// holds the message has been fsynced (or failed), so a positive answer is a
// promise that survives power loss.
func (s *Spool) Append(ctx context.Context, e Entry) (Result, error) {
	req := &appendReq{e: e, done: make(chan appendRes, 1)}
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return Result{}, ErrClosed
	}
	s.intake.begin()
	defer s.intake.end()
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		s.closeMu.RUnlock()
		return Result{}, ctx.Err()
	}
	s.closeMu.RUnlock()
	// Once queued the request is committed or refused; waiting for the verdict
	// regardless of ctx keeps "told AE" and "stored" from ever both happening.
	r := <-req.done
	return r.r, r.err
}

// IntakeIdle says how long no Append has been waiting for its group commit;
// while one is, it returns a channel that is closed once none is. Delivery
// workers use it to give way to intake (pipeline/deliver, Worker.yield): a
// sender waits for its ACK, a destination's copy can wait a little.
//
// Once more than a quarter of spool.max_bytes is in use it reports intake
// as long quiet, whatever it is doing: then draining the spool comes first,
// so that a long burst (a system sending its backlog after an outage)
// cannot fill the spool because delivery kept giving way.
func (s *Spool) IntakeIdle() (time.Duration, <-chan struct{}) {
	s.mu.Lock()
	filling := s.usedBytesLocked() > s.cfg.MaxBytes/4
	s.mu.Unlock()
	if filling {
		return time.Duration(math.MaxInt64), nil
	}
	return s.intake.idle()
}

// appendGauge counts Appends in flight, remembers the most there were at
// once lately (for gather), and wakes those waiting for none.
type appendGauge struct {
	n         atomic.Int64
	quietFrom atomic.Int64                  // UnixNano when n last dropped to 0
	quiet     atomic.Pointer[chan struct{}] // closed and replaced when n drops to 0

	peak     atomic.Int64 // most in flight at once since peakFrom
	lastPeak atomic.Int64 // most in flight at once in the window before
	peakFrom time.Time    // the commit loop's alone
}

// peakWindow is how long a peak of concurrent Appends is remembered: one
// to two windows.
const peakWindow = time.Second

func (a *appendGauge) begin() {
	v := a.n.Add(1)
	for {
		p := a.peak.Load()
		if v <= p || a.peak.CompareAndSwap(p, v) {
			return
		}
	}
}

// recentPeak is the most Appends in flight at once in the last one to two
// peak windows.
func (a *appendGauge) recentPeak() int {
	return int(max(a.peak.Load(), a.lastPeak.Load()))
}

// roll starts a new peak window when the current one is over. A window
// that ended long ago (the spool was idle) is not remembered: its senders
// are gone.
func (a *appendGauge) roll(now time.Time) {
	since := now.Sub(a.peakFrom)
	if since < peakWindow {
		return
	}
	a.peakFrom = now
	last := a.peak.Swap(a.n.Load())
	if since >= 2*peakWindow {
		last = 0
	}
	a.lastPeak.Store(last)
}

func (a *appendGauge) end() {
	if a.n.Add(-1) == 0 {
		a.quietFrom.Store(time.Now().UnixNano())
		ch := make(chan struct{})
		if old := a.quiet.Swap(&ch); old != nil {
			close(*old)
		}
	}
}

func (a *appendGauge) idle() (time.Duration, <-chan struct{}) {
	ch := a.quiet.Load()
	if ch == nil {
		fresh := make(chan struct{})
		if a.quiet.CompareAndSwap(nil, &fresh) {
			ch = &fresh
		} else {
			ch = a.quiet.Load()
		}
	}
	// ch is loaded before n is read: if n drops to 0 after the read, end
	// closes ch or a later channel, and a stale closed ch only wakes early.
	if a.n.Load() > 0 {
		return 0, *ch
	}
	from := a.quietFrom.Load()
	if from == 0 {
		return time.Duration(1<<63 - 1), nil // no Append yet
	}
	return max(time.Duration(time.Now().UnixNano()-from), 0), nil
}

// maxGroup bounds one group commit.
const maxGroup = 512

func (s *Spool) commitLoop() {
	defer s.wg.Done()
	batch := make([]*appendReq, 0, maxGroup)
	gatherTimer := time.NewTimer(time.Hour)
	gatherTimer.Stop()
	var syncTook time.Duration // how long the last group's commit and fsync took
	reopen := time.NewTimer(time.Hour)
	reopen.Stop()
	defer reopen.Stop()
	lazy := time.NewTicker(lazySync)
	defer lazy.Stop()
	armed := false
	for {
		if !armed && s.faultErr() != nil && !s.tablesDamaged() {
			reopen.Reset(faultRetry)
			armed = true
		}
		select {
		case r := <-s.reqs:
			batch = append(batch[:0], r)
		case <-reopen.C:
			armed = false
			s.tryReopen()
			continue
		case <-lazy.C:
			s.syncLazy()
			// Writes that come with no message (delivery marks of a
			// backlog, dead letters, trace events) fill the log too.
			if s.faultErr() == nil {
				s.checkpoint(time.Now())
			}
			continue
		case <-s.stop:
			// Requests queued before close are still honoured.
			for {
				select {
				case r := <-s.reqs:
					s.commit([]*appendReq{r})
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < maxGroup {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		batch = s.gather(batch, gatherTimer, syncTook)
		t0 := time.Now()
		s.commit(batch)
		syncTook = time.Since(t0)
		s.intake.roll(t0)
		if s.faultErr() == nil {
			s.checkpoint(t0)
		}
	}
}

// lazySync is how long a write that no group commit synced (a delivery
// mark, a trace event) may wait in the commit log's buffer: after a cut a
// message whose mark was lost is delivered again, under its own GUID.
const lazySync = time.Second

// syncLazy syncs the commit log when something waits in it.
func (s *Spool) syncLazy() {
	if s.faultErr() != nil || !s.clog.Pending() {
		return
	}
	_ = s.syncLogs(false)
}

// gatherAtMost caps how long a group waits for senders to come back.
const gatherAtMost = 2 * time.Millisecond

// gather lets a group wait for the senders that are about to send again.
//
// Senders that wait for their ACK before the next message (MLLP is
// lockstep) otherwise split into cohorts: while one cohort's group is
// fsynced the other's messages arrive and form the next group, and each
// cohort then waits for the other's fsync as well as its own. When fewer
// messages are queued than were in flight at once in the last second or
// so, the group waits for more, at most as long as the last commit took
// (and never more than gatherAtMost): at worst a group's ACKs come one
// commit later, and at best the cohorts merge and one fsync serves them
// all. A single sender, or senders that never overlapped, never wait.
func (s *Spool) gather(batch []*appendReq, t *time.Timer, took time.Duration) []*appendReq {
	want := min(s.intake.recentPeak(), maxGroup)
	if len(batch) >= want || took <= 0 {
		return batch
	}
	t.Reset(min(took, gatherAtMost))
	defer t.Stop()
	for len(batch) < want {
		select {
		case r := <-s.reqs:
			batch = append(batch, r)
		case <-t.C:
			return batch
		case <-s.stop:
			return batch
		}
	}
	return batch
}

// txnBudget keeps one transaction well under Badger's limit of 15% of the memtable.
func (s *Spool) txnBudget() int64 {
	return s.db.Opts().MemTableSize / 10
}

type pendingWrite struct {
	req      *appendReq
	res      Result
	err      error
	seg      uint64
	bytes    int64
	dests    []string
	undeliv  bool
	deadDest string
	deadSize int64
	txn      int           // index of the transaction that carried it; -1 for none
	dupOf    *pendingWrite // the same remote ID earlier in this group
	// trace is the trace keys it wrote (forgotten with it if the sync
	// fails) and their estimated size.
	trace      [][]byte
	traceBytes int64
}

// commit stores one group of appends: each is admitted or refused against
// the quota, the admitted ones are written in as few transactions as fit and
// fsynced once, the in-memory counters follow what was committed, and only
// then is each sender told.
func (s *Spool) commit(batch []*appendReq) {
	if err := s.faultErr(); err != nil {
		for _, r := range batch {
			r.done <- appendRes{err: err}
		}
		return
	}
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	g := s.newGroup()
	defer func() { g.txn.Discard() }()
	writes := make([]*pendingWrite, 0, len(batch))
	for _, r := range batch {
		writes = append(writes, g.add(r))
	}
	syncErr := g.commitAndSync()
	for _, w := range writes {
		// A transaction Badger took but the commit log did not faulted the
		// spool: its writes are in doubt like a failed sync's (reply
		// refuses them and the re-open removes them), not simply failed.
		if w.txn >= 0 && g.txnErrs[w.txn] != nil && w.err == nil && !errors.Is(g.txnErrs[w.txn], ErrStorageFault) {
			w.err = fmt.Errorf("spool commit in %s failed: %w (check the disk; the sender should retry)", s.cfg.Dir, g.txnErrs[w.txn])
		}
	}
	for _, w := range writes {
		if w.dupOf != nil && w.dupOf.err != nil {
			w.err = w.dupOf.err
		}
	}
	s.account(g, writes, syncErr)
	if g.rolled || s.retainPressure() {
		select {
		case s.gcKick <- struct{}{}:
		default:
		}
	}
	s.reply(writes, syncErr)
}

// group is one group commit under way: the transaction being filled, the
// verdicts of those already committed, and the sequence and segment counters
// as this group has advanced them.
type group struct {
	s     *Spool
	quota quota
	used  int64 // quota.usedBefore plus what this group has admitted
	now   time.Time

	txn     *wtxn
	txnSize int64
	txnErr  error   // first error while filling txn; it is then not committed
	txnErrs []error // one per transaction committed so far

	seq         uint64
	curSeg      uint64
	curSegCount int
	rolled      bool                     // the open segment was closed so clean-up can free it
	bigValue    bool                     // a value went to the value log: DB.Sync must cover it too
	seenRemote  map[string]*pendingWrite // remote IDs stored by this group
}

func (s *Spool) newGroup() *group {
	s.mu.Lock()
	q := quota{maxBytes: s.cfg.MaxBytes, minFreeDisk: s.cfg.MinFreeDisk, usedBefore: s.usedBytesLocked(), free: s.freeDisk}
	if retained, _, _ := s.retainedFiguresLocked(); q.free > 0 {
		// Retained messages make way for new ones: their space counts as free.
		q.free += retained
	}
	s.mu.Unlock()
	return &group{
		s: s, quota: q, used: q.usedBefore, now: s.now(),
		txn: s.newTxn(), seenRemote: map[string]*pendingWrite{},
		seq: s.lastSeq, curSeg: s.curSeg, curSegCount: s.curSegCount,
	}
}

// add admits one append into the group or gives it its refusal.
func (g *group) add(r *appendReq) *pendingWrite {
	w := &pendingWrite{req: r, txn: -1}
	e := r.e
	if e.RemoteID != "" {
		rk := remoteKey(e.Source, e.RemoteID)
		if first := g.seenRemote[string(rk)]; first != nil {
			// Its fate is the first copy's: commit fails it with it.
			w.dupOf = first
			w.res = Result{GUID: first.res.GUID, Duplicate: true, Headroom: g.quota.headroom(g.used)}
			return w
		}
		guid, dup, err := getString(g.txn.Txn, rk)
		if err != nil {
			w.err = fmt.Errorf("spool lookup of remembered ID: %w", err)
			return w
		}
		if dup {
			w.res = Result{GUID: guid, Duplicate: true, Headroom: g.quota.headroom(g.used)}
			return w
		}
	}
	size := int64(len(e.Raw)) + 128 // what the quota counts per message
	if len(e.Raw) > MaxStoredMessage {
		// Badger would refuse it with an error that quotes its first
		// kilobyte: patient data in a log line and an AE.
		w.err = fmt.Errorf("%w: a message of %d bytes is larger than the spool stores (%d bytes); lower the source's max_message_bytes to at most that", ErrTooLarge, len(e.Raw), MaxStoredMessage)
		return w
	}
	switch v := g.quota.admit(g.used, size, e.deadKey != nil); v {
	case admitted:
	case overQuota:
		// The open segment is never dropped. If everything in it has been
		// delivered, close it now so clean-up can free its space; otherwise a
		// full, fully delivered segment would refuse every message until a
		// restart.
		if g.curSegCount > 0 && g.s.segDelivered(g.curSeg) {
			g.curSeg++
			g.curSegCount = 0
			g.rolled = true
		}
		w.err = g.quota.refusal(v, g.used)
		return w
	default:
		w.err = g.quota.refusal(v, g.used)
		return w
	}
	if e.GUID == uuid.Nil {
		e.GUID = newGUID(g.now)
	}
	g.seq++
	rec := &record{GUID: e.GUID, Seq: g.seq, Received: g.now, Source: e.Source, Dests: e.Dests, Raw: e.Raw, Attempts: e.attempts}
	val := rec.encode()
	g.bigValue = g.bigValue || len(val) >= largeValue
	var head []byte
	if g.s.tracing() && e.deadKey == nil && !e.rerouted && len(e.Dests) > 0 {
		head = newHead(e, g.now).encodeQueued()
	}
	entries := g.entries(e, w, val, head)
	if g.s.tracing() {
		entries = append(entries, g.traceEntries(e, w, rec)...)
	}
	g.put(entries, e.deadKey)
	if e.deadKey != nil {
		w.deadDest, _ = nameOf(e.deadKey)
		w.deadSize = int64(len(val))
	}
	w.txn = len(g.txnErrs)
	w.bytes = int64(len(val)) + 17
	w.dests = e.Dests
	g.used += size
	w.res = Result{GUID: e.GUID.String(), Seq: g.seq, Undeliverable: w.undeliv, Headroom: g.quota.headroom(g.used)}
	return w
}

// entries are the keys one admitted message writes: the message in the open
// segment and a queue key per destination (carrying head, its encoded trace
// header, when traces are on), or an undeliverable record; and its
// remembered remote ID.
func (g *group) entries(e Entry, w *pendingWrite, val, head []byte) []*badger.Entry {
	var out []*badger.Entry
	if len(e.Dests) == 0 {
		w.undeliv = true
		out = append(out, badger.NewEntry(seqKey(famUndeliv, g.seq), val).WithTTL(g.s.cfg.UndeliverableRetention))
	} else {
		if g.curSegCount >= g.s.cfg.SegmentMessages {
			g.curSeg++
			g.curSegCount = 0
		}
		g.curSegCount++
		w.seg = g.curSeg
		out = append(out, badger.NewEntry(msgKey(w.seg, g.seq), val))
		qv := queueValue(w.seg, g.now, e.GUID, head)
		for _, d := range e.Dests {
			out = append(out, badger.NewEntry(namedSeqKey(famQueue, d, g.seq), qv))
		}
	}
	if e.RemoteID != "" {
		rk := remoteKey(e.Source, e.RemoteID)
		g.seenRemote[string(rk)] = w
		out = append(out, badger.NewEntry(rk, []byte(e.GUID.String())).WithTTL(g.s.cfg.RememberFor))
	}
	return out
}

// put sets one message's entries (and deletes the dead letter it re-queues)
// in the current transaction, starting a new one first when they would not
// fit. A group may need several transactions; each write remembers which one
// carried it so that accounting follows exactly what was committed.
func (g *group) put(entries []*badger.Entry, deadKey []byte) {
	var esize int64
	for _, en := range entries {
		esize += int64(len(en.Key)+len(en.Value)) + 64
	}
	if g.txnSize > 0 && g.txnSize+esize > g.s.txnBudget() {
		g.flush()
	}
	for _, en := range entries {
		if err := g.txn.SetEntry(en); err != nil && g.txnErr == nil {
			g.txnErr = err
		}
	}
	if deadKey != nil {
		if err := g.txn.Delete(deadKey); err != nil && g.txnErr == nil {
			g.txnErr = err
		}
	}
	g.txnSize += esize
}

// flush commits the current transaction (unless filling it failed) and
// starts the next.
func (g *group) flush() {
	err := g.txnErr
	if err == nil {
		err = g.s.commitTxn(g.txn)
	}
	g.txnErrs = append(g.txnErrs, err)
	g.txn.Discard()
	g.txn = g.s.newTxn()
	g.txnSize, g.txnErr = 0, nil
}

// commitAndSync saves the last sequence number with the group's last
// transaction, commits it and fsyncs once for the whole group (walsync.go
// says why that is not badger.DB.Sync). A transaction that failed fails
// only its own writes (commit sets their errors); the returned error is the
// sync's, which makes every write of the group unsafe to acknowledge.
func (g *group) commitAndSync() error {
	if g.txnSize > 0 || g.seq != g.s.lastSeq {
		if err := g.txn.SetEntry(badger.NewEntry(keyLastSeq, binary.BigEndian.AppendUint64(nil, g.seq))); err != nil && g.txnErr == nil {
			g.txnErr = err
		}
	}
	g.flush()
	// A group that put a value in the value log syncs that too, every
	// value-log file it may have reached.
	return g.s.syncLogs(g.bigValue)
}

// account brings the in-memory counters up to what the group committed.
func (s *Spool) account(g *group, writes []*pendingWrite, syncErr error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncs++
	// Sequence numbers and segments are never reused, even after a failed
	// commit, so a partly committed group cannot collide with the next one.
	s.lastSeq, s.curSeg, s.curSegCount = g.seq, g.curSeg, g.curSegCount
	// Committed data is visible whether or not the fsync worked, so the
	// accounting follows the commit, not the sync.
	for _, w := range writes {
		if w.err != nil || w.res.Duplicate {
			continue
		}
		if syncErr == nil {
			s.appended++
		}
		if w.undeliv {
			s.undeliv++
			s.undelivBytes += w.bytes
		} else {
			si := s.seg(w.seg)
			si.stamp(g.now.UnixNano())
			si.count++
			si.bytes += w.bytes
			si.pending += len(w.dests)
			for _, d := range w.dests {
				s.queued[d]++
			}
		}
		if w.deadDest != "" {
			s.dead[w.deadDest]--
			s.deadBytes -= w.deadSize
		}
		s.traceBytes += w.traceBytes
	}
	var txnErr error
	for _, err := range g.txnErrs {
		txnErr = cmp.Or(txnErr, err)
	}
	switch {
	case syncErr != nil:
		s.faultLocked(syncErr, doubtful(writes))
	case s.fault != nil:
	case txnErr != nil:
		s.storageErr = fmt.Sprintf("spool write failed: %v", txnErr)
		s.durableSeq = g.seq
	default:
		s.storageErr = ""
		s.durableSeq = g.seq
	}
}

// doubtful lists the committed writes of a group whose sync failed.
func doubtful(writes []*pendingWrite) []inDoubt {
	var out []inDoubt
	for _, w := range writes {
		if w.err != nil || w.res.Duplicate {
			continue
		}
		if w.deadDest != "" {
			// Nothing: the dead letter stays as the disk has it, dead or
			// queued again, and its trace with it. The "retried" event and
			// the header pointed at the new copy were in the same
			// transaction as the new queue entry; forgetting them would
			// lose the header (the whole trace) and call a queued message dead.
			continue
		}
		d := inDoubt{seq: w.res.Seq, seg: w.seg, dests: w.dests, undeliv: w.undeliv, trace: w.trace}
		if e := w.req.e; e.RemoteID != "" {
			d.remote = remoteKey(e.Source, e.RemoteID)
		}
		out = append(out, d)
	}
	return out
}

// reply tells each sender its verdict and wakes the destinations that have
// new work. A failed fsync fails every write of the group.
func (s *Spool) reply(writes []*pendingWrite, syncErr error) {
	for _, w := range writes {
		if w.err == nil && syncErr != nil {
			w.err = fmt.Errorf("%w in %s: %w (messages are refused until the spool is re-opened from disk; the sender should retry; check the card)", ErrStorageFault, s.cfg.Dir, syncErr)
		}
		if w.err == nil && !w.res.Duplicate {
			for _, d := range w.dests {
				s.signal(d)
			}
		}
		w.req.done <- appendRes{r: w.res, err: w.err}
	}
}
