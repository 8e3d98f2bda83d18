// Package storage is the durable spool: every accepted message is written
// once to Badger, fsynced in a group with its concurrent neighbours before
// anyone is told it is safe, and then handed to each destination in arrival
// order through a per-destination FIFO index. Delivered data leaves the disk
// a segment at a time.
package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"
	"github.com/hl7edge/hl7edge/pipeline/flow"
)

// Errors callers act on.
var (
	ErrFull   = errors.New("spool is full")
	ErrClosed = errors.New("spool is closed")
)

// Entry is one message to append.
type Entry struct {
	Source   string
	Raw      []byte
	Dests    []string // empty: the message goes to the undeliverable store
	RemoteID string   // optional: remembered with the message so it is never stored twice
	GUID     uuid.UUID
	deadKey  []byte // set when re-queueing a dead letter: removed in the same commit
	attempts int
}

// Result of an Append.
type Result struct {
	GUID          string
	Seq           uint64
	Duplicate     bool // RemoteID was stored before: nothing written
	Undeliverable bool
	// Headroom is true when, after this write, the spool is below its
	// low-water mark: at most 90% of max_bytes in use and min_free_disk plus
	// a tenth of max_bytes free on the file system. A "spool full" state
	// should end only then; ending it at the first message that fits makes
	// the alarm flap while senders keep the spool at its limit.
	Headroom bool
}

type appendReq struct {
	e    Entry
	done chan appendRes
}

type appendRes struct {
	r   Result
	err error
}

type segInfo struct {
	pending int   // q keys still pointing into the segment
	count   int   // messages in it
	bytes   int64 // their approximate stored size
}

// Options are the spool's collaborators.
type Options struct {
	Log          *slog.Logger
	Destinations []string // configured destinations; only these hold back clean-up
	Now          func() time.Time
	// GCInterval is how often fully delivered segments are looked for.
	GCInterval time.Duration
	// LockWait is how long Open waits for another process to let go of the
	// spool before it fails with ErrInUse; 0 tries once.
	LockWait time.Duration
}

// Spool is the Badger-backed message store.
type Spool struct {
	cfg  Config
	db   *badger.DB
	lock *os.File // held from before Badger opens until after it closes
	log  *slog.Logger
	now  func() time.Time
	reqs chan *appendReq

	// dropMu keeps writes out while DropPrefix runs: Badger refuses every
	// write during a drop (ErrBlockedWrites) instead of waiting.
	dropMu sync.RWMutex

	closeMu sync.RWMutex
	closed  bool
	stop    chan struct{}
	wg      sync.WaitGroup
	gcKick  chan struct{}
	gcEvery time.Duration

	mu            sync.Mutex
	lastSeq       uint64
	curSeg        uint64
	curSegCount   int
	segs          map[uint64]*segInfo
	queued        map[string]int64
	delivered     map[string]uint64
	deliveredSave map[string]uint64
	dead          map[string]int64
	deadBytes     int64
	undeliv       int64
	undelivBytes  int64
	freeDisk      int64
	storageErr    string
	notify        map[string]chan struct{}
	dests         []string
	syncs         uint64
	appended      uint64
}

// Open opens (creating if needed) the spool in cfg.Dir.
func Open(cfg Config, o Options) (*Spool, error) {
	if strconv.IntSize == 32 {
		return nil, ErrPlatform32
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.GCInterval == 0 {
		o.GCInterval = 2 * time.Second
	}
	key, err := readKey(cfg.EncryptionKeyFile)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("spool directory %s: %w (create it or set spool.dir to a writable directory)", cfg.Dir, err)
	}
	lock, err := lockSpool(cfg.Dir, o.LockWait, o.Log)
	if err != nil {
		return nil, err
	}
	// Everything from here on touches files another process may be using, so
	// it runs under the lock.
	if err := removeEmptyMemtables(cfg.Dir, o.Log); err != nil {
		_ = lock.Close()
		return nil, err
	}
	db, err := badger.Open(badgerOptions(cfg, key, o.Log))
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("open spool %s: %w (is another hl7edge using it? only one process may open a spool; use the admin socket to reach a running daemon)", cfg.Dir, err)
	}
	s := &Spool{
		cfg: cfg, db: db, lock: lock, log: o.Log, now: o.Now,
		reqs:   make(chan *appendReq, 1024),
		stop:   make(chan struct{}),
		gcKick: make(chan struct{}, 1), gcEvery: o.GCInterval,
		segs: map[uint64]*segInfo{}, queued: map[string]int64{}, delivered: map[string]uint64{},
		deliveredSave: map[string]uint64{}, dead: map[string]int64{}, notify: map[string]chan struct{}{},
		dests: slices.Clone(o.Destinations),
	}
	for _, d := range s.dests {
		s.queued[d] = 0
		s.notify[d] = make(chan struct{}, 1)
	}
	if err := s.load(); err != nil {
		_ = db.Close()
		_ = lock.Close()
		return nil, fmt.Errorf("read spool %s: %w", cfg.Dir, err)
	}
	s.refreshFreeDisk()
	s.wg.Add(2)
	go s.commitLoop()
	go s.gcLoop()
	return s, nil
}

// removeEmptyMemtables deletes zero-length memtable logs. Badger creates a
// .mem file and then sizes it; a SIGKILL or power cut between the two leaves
// an empty file that Badger refuses to open ("Create a new file"), which would
// keep the gateway down for good. An empty log holds no data.
func removeEmptyMemtables(dir string, log *slog.Logger) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("spool directory %s: %w", dir, err)
	}
	for _, e := range ents {
		if e.IsDir() || filepath.Ext(e.Name()) != ".mem" {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Size() == 0 {
			p := filepath.Join(dir, e.Name())
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("remove empty memtable log %s: %w (remove it by hand)", p, err)
			}
			log.Warn("removed an empty memtable log left by an interrupted start", "file", e.Name())
		}
	}
	return nil
}

// load rebuilds the in-memory accounting from the keys on disk.
func (s *Spool) load() error {
	return s.db.View(func(txn *badger.Txn) error {
		if it, err := txn.Get(keyLastSeq); err == nil {
			if err := it.Value(func(v []byte) error {
				if len(v) == 8 {
					s.lastSeq = binary.BigEndian.Uint64(v)
				}
				return nil
			}); err != nil {
				return err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		var maxSeg uint64
		orphans := map[string]int64{}
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			switch k[0] {
			case famMessage:
				if len(k) != 17 {
					continue
				}
				seg := binary.BigEndian.Uint64(k[1:9])
				si := s.seg(seg)
				si.count++
				si.bytes += int64(item.ValueSize()) + int64(len(k))
				maxSeg = max(maxSeg, seg)
				s.lastSeq = max(s.lastSeq, seqOf(k))
			case famQueue:
				dest, ok := nameOf(k)
				if !ok {
					continue
				}
				seg, err := segOf(item)
				if err != nil {
					return err
				}
				s.seg(seg).pending++
				if _, known := s.queued[dest]; known {
					s.queued[dest]++
				} else {
					orphans[dest]++
				}
			case famDead:
				if dest, ok := nameOf(k); ok {
					s.dead[dest]++
					s.deadBytes += int64(item.ValueSize())
				}
			case famUndeliv:
				s.undeliv++
				s.undelivBytes += int64(item.ValueSize())
				s.lastSeq = max(s.lastSeq, seqOf(k))
			case famMeta:
				if name, ok := cutPrefix(k, "xdelv"); ok {
					_ = item.Value(func(v []byte) error {
						if len(v) == 8 {
							s.delivered[name] = binary.BigEndian.Uint64(v)
							s.deliveredSave[name] = s.delivered[name]
						}
						return nil
					})
				}
			}
		}
		s.curSeg = maxSeg + 1
		for d, n := range orphans {
			s.log.Warn("spool holds messages for a destination that is no longer configured; they keep their disk space until it is configured again or they are purged",
				"destination", d, "queued", n)
		}
		return nil
	})
}

func cutPrefix(k []byte, p string) (string, bool) {
	if len(k) < len(p) || string(k[:len(p)]) != p {
		return "", false
	}
	return string(k[len(p):]), true
}

// nameOf reads the name in a q or d key.
func nameOf(k []byte) (string, bool) {
	if len(k) < 10 || k[len(k)-9] != 0 {
		return "", false
	}
	return string(k[1 : len(k)-9]), true
}

func (s *Spool) seg(n uint64) *segInfo {
	si := s.segs[n]
	if si == nil {
		si = &segInfo{}
		s.segs[n] = si
	}
	return si
}

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

// maxGroup bounds one group commit.
const maxGroup = 512

func (s *Spool) commitLoop() {
	defer s.wg.Done()
	batch := make([]*appendReq, 0, maxGroup)
	for {
		select {
		case r := <-s.reqs:
			batch = append(batch[:0], r)
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
		s.commit(batch)
	}
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
	txn      int // index of the transaction that carried it; -1 for none
}

func (s *Spool) commit(batch []*appendReq) {
	s.dropMu.RLock()
	defer s.dropMu.RUnlock()
	s.mu.Lock()
	used := s.usedBytesLocked()
	free := s.freeDisk
	s.mu.Unlock()

	writes := make([]*pendingWrite, 0, len(batch))
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	var txnSize int64
	var txnErr error
	seenRemote := map[string]string{}
	now := s.now()
	seq := s.lastSeq
	curSeg, curSegCount := s.curSeg, s.curSegCount
	rolled := false
	margin, usedBefore := int64(s.cfg.MaxBytes)/10, used
	headroom := func(used int64) bool {
		// free was read before this group; its writes come off it.
		diskFree := free - (used - usedBefore)
		return used <= int64(s.cfg.MaxBytes)-margin && (free <= 0 || diskFree >= int64(s.cfg.MinFreeDisk)+margin)
	}
	// A group may need several transactions; each write remembers which one
	// carried it so that accounting follows exactly what was committed.
	var txnErrs []error
	flush := func() {
		err := txnErr
		if err == nil {
			err = txn.Commit()
		}
		txnErrs = append(txnErrs, err)
		txn.Discard()
		txn = s.db.NewTransaction(true)
		txnSize, txnErr = 0, nil
	}

	for _, r := range batch {
		w := &pendingWrite{req: r, txn: -1}
		writes = append(writes, w)
		e := r.e
		if e.RemoteID != "" {
			rk := remoteKey(e.Source, e.RemoteID)
			if g, ok := seenRemote[string(rk)]; ok {
				w.res = Result{GUID: g, Duplicate: true, Headroom: headroom(used)}
				continue
			}
			if g, found, err := getString(txn, rk); err != nil {
				w.err = fmt.Errorf("spool lookup of remembered ID: %w", err)
				continue
			} else if found {
				w.res = Result{GUID: g, Duplicate: true, Headroom: headroom(used)}
				continue
			}
		}
		size := int64(len(e.Raw)) + 128
		if e.deadKey == nil && used+size > int64(s.cfg.MaxBytes) {
			// The open segment is never dropped. If everything in it has
			// been delivered, close it now so clean-up can free its space;
			// otherwise a full, fully delivered segment would refuse every
			// message until a restart.
			if curSegCount > 0 && s.segDelivered(curSeg) {
				curSeg++
				curSegCount = 0
				rolled = true
			}
			w.err = fmt.Errorf("%w: %d of %d bytes (spool.max_bytes) in use; the sender should retry later, and an operator should check why destinations are not draining", ErrFull, used, int64(s.cfg.MaxBytes))
			continue
		}
		if e.deadKey == nil && free > 0 && free-size < int64(s.cfg.MinFreeDisk) {
			w.err = fmt.Errorf("%w: only %d bytes free on the spool's file system (spool.min_free_disk is %d); free disk space", ErrFull, free, int64(s.cfg.MinFreeDisk))
			continue
		}
		if e.GUID == uuid.Nil {
			e.GUID = uuid.New()
		}
		seq++
		rec := &record{GUID: e.GUID, Seq: seq, Received: now, Source: e.Source, Dests: e.Dests, Raw: e.Raw, Attempts: e.attempts}
		val := rec.encode()
		var entries []*badger.Entry
		if len(e.Dests) == 0 {
			w.undeliv = true
			entries = append(entries, badger.NewEntry(seqKey(famUndeliv, seq), val).WithTTL(s.cfg.UndeliverableRetention.D()))
		} else {
			if curSegCount >= s.cfg.SegmentMessages {
				curSeg++
				curSegCount = 0
			}
			curSegCount++
			w.seg = curSeg
			entries = append(entries, badger.NewEntry(msgKey(w.seg, seq), val))
			qv := binary.BigEndian.AppendUint64(nil, w.seg)
			qv = binary.BigEndian.AppendUint64(qv, uint64(now.UnixNano()))
			for _, d := range e.Dests {
				entries = append(entries, badger.NewEntry(namedSeqKey(famQueue, d, seq), qv))
			}
		}
		if e.RemoteID != "" {
			rk := remoteKey(e.Source, e.RemoteID)
			seenRemote[string(rk)] = e.GUID.String()
			entries = append(entries, badger.NewEntry(rk, []byte(e.GUID.String())).WithTTL(s.cfg.RememberFor.D()))
		}
		var esize int64
		for _, en := range entries {
			esize += int64(len(en.Key)+len(en.Value)) + 64
		}
		if txnSize > 0 && txnSize+esize > s.txnBudget() {
			flush()
		}
		for _, en := range entries {
			if err := txn.SetEntry(en); err != nil && txnErr == nil {
				txnErr = err
			}
		}
		if e.deadKey != nil {
			if err := txn.Delete(e.deadKey); err != nil && txnErr == nil {
				txnErr = err
			}
			w.deadDest, _ = nameOf(e.deadKey)
			w.deadSize = int64(len(val))
		}
		txnSize += esize
		w.txn = len(txnErrs)
		w.bytes = int64(len(val)) + 17
		w.dests = e.Dests
		used += size
		w.res = Result{GUID: e.GUID.String(), Seq: seq, Undeliverable: w.undeliv, Headroom: headroom(used)}
	}
	if txnSize > 0 || seq != s.lastSeq {
		if err := txn.SetEntry(badger.NewEntry(keyLastSeq, binary.BigEndian.AppendUint64(nil, seq))); err != nil && txnErr == nil {
			txnErr = err
		}
	}
	flush()
	var syncErr error
	for _, err := range txnErrs {
		if err != nil {
			syncErr = err
		}
	}
	if syncErr == nil {
		syncErr = s.db.Sync()
	}
	for _, w := range writes {
		if w.txn >= 0 && txnErrs[w.txn] != nil && w.err == nil {
			w.err = fmt.Errorf("spool commit in %s failed: %w (check the disk; the sender should retry)", s.cfg.Dir, txnErrs[w.txn])
		}
	}

	s.mu.Lock()
	s.syncs++
	// Sequence numbers and segments are never reused, even after a failed
	// commit, so a partly committed group cannot collide with the next one.
	s.lastSeq, s.curSeg, s.curSegCount = seq, curSeg, curSegCount
	{
		// Committed data is visible whether or not the fsync worked, so the
		// accounting follows the commit, not the sync.
		for _, w := range writes {
			if w.err != nil || w.res.Duplicate {
				continue
			}
			s.appended++
			if w.undeliv {
				s.undeliv++
				s.undelivBytes += w.bytes
			} else {
				si := s.seg(w.seg)
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
		}
	}
	if syncErr != nil {
		s.storageErr = fmt.Sprintf("spool write failed: %v", syncErr)
	} else {
		s.storageErr = ""
	}
	s.mu.Unlock()

	if rolled {
		select {
		case s.gcKick <- struct{}{}:
		default:
		}
	}
	for _, w := range writes {
		if w.err == nil && syncErr != nil {
			w.err = fmt.Errorf("spool commit in %s failed: %w (check the disk; the sender should retry)", s.cfg.Dir, syncErr)
		}
		if w.err == nil && !w.res.Duplicate {
			for _, d := range w.dests {
				s.signal(d)
			}
		}
		w.req.done <- appendRes{r: w.res, err: w.err}
	}
}

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

// segDelivered says whether nothing in segment seg is still owed to anyone.
func (s *Spool) segDelivered(seg uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	si := s.segs[seg]
	return si == nil || si.pending <= 0
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
// above after, oldest first.
func (s *Spool) Next(dest string, after uint64, max int) ([]flow.Message, error) {
	var out []flow.Message
	err := s.db.View(func(txn *badger.Txn) error {
		prefix := namedPrefix(famQueue, dest)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
		defer it.Close()
		var budget int64 = 4 << 20
		for it.Seek(namedSeqKey(famQueue, dest, after+1)); it.Valid() && len(out) < max && budget > 0; it.Next() {
			item := it.Item()
			seq := seqOf(item.Key())
			seg, err := segOf(item)
			if err != nil {
				return err
			}
			mi, err := txn.Get(msgKey(seg, seq))
			if err != nil {
				return fmt.Errorf("spool: message %d queued for %s is missing: %w", seq, dest, err)
			}
			v, err := mi.ValueCopy(nil)
			if err != nil {
				return err
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("spool: message %d: %w", seq, err)
			}
			budget -= int64(len(rec.Raw))
			out = append(out, flow.Message{Seq: seq, GUID: rec.GUID.String(), Source: rec.Source, Received: rec.Received, Raw: rec.Raw})
		}
		return nil
	})
	return out, err
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
	qk := namedSeqKey(famQueue, dest, seq)
	var seg uint64
	var deadSize int64
	found := false
	s.dropMu.RLock()
	defer s.dropMu.RUnlock()
	err := s.db.Update(func(txn *badger.Txn) error {
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
		if deadReason != "" {
			mi, err := txn.Get(msgKey(seg, seq))
			if err != nil {
				return fmt.Errorf("message %d for dead letters: %w", seq, err)
			}
			v, err := mi.ValueCopy(nil)
			if err != nil {
				return err
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return err
			}
			rec.Reason, rec.Attempts, rec.Dests = deadReason, attempts, []string{dest}
			dv := rec.encode()
			deadSize = int64(len(dv))
			if err := txn.Set(namedSeqKey(famDead, dest, seq), dv); err != nil {
				return err
			}
		}
		return txn.Delete(qk)
	})
	if err != nil {
		return fmt.Errorf("spool: release message %d of %s: %w", seq, dest, err)
	}
	if !found {
		return nil
	}
	s.mu.Lock()
	si := s.seg(seg)
	si.pending--
	s.queued[dest]--
	if deadReason != "" {
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
	return nil
}

// usedBytesLocked is what counts against max_bytes: every message still on
// disk, whether queued, dead or undeliverable.
func (s *Spool) usedBytesLocked() int64 {
	var n int64
	for _, si := range s.segs {
		n += si.bytes
	}
	return n + s.deadBytes + s.undelivBytes
}

// gcLoop drops fully delivered segments, refreshes the free-disk figure and
// saves counters. Dropping whole segments is what keeps disk use flat.
func (s *Spool) gcLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.gcEvery)
	defer t.Stop()
	vlogGC := time.NewTicker(10 * time.Minute)
	defer vlogGC.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.refreshFreeDisk()
			s.saveCounters()
		case <-s.gcKick:
		case <-vlogGC.C:
			// Only messages over the value threshold (1 MB) live in the value log.
			for s.db.RunValueLogGC(0.5) == nil {
			}
			continue
		}
		if err := s.dropDelivered(); err != nil {
			s.log.Error("spool clean-up failed; delivered data stays on disk until the next try", "err", err)
		}
	}
}

func (s *Spool) dropDelivered() error {
	s.mu.Lock()
	var drop []uint64
	for seg, si := range s.segs {
		if si.pending <= 0 && seg < s.curSeg {
			drop = append(drop, seg)
		}
	}
	s.mu.Unlock()
	if len(drop) == 0 {
		return nil
	}
	slices.Sort(drop)
	prefixes := make([][]byte, len(drop))
	for i, seg := range drop {
		prefixes[i] = segPrefix(seg)
	}
	s.log.Debug("spool dropping delivered segments", "segments", len(drop))
	s.dropMu.Lock()
	err := s.db.DropPrefix(prefixes...)
	s.dropMu.Unlock()
	if err != nil {
		return fmt.Errorf("drop %d delivered segments: %w", len(drop), err)
	}
	s.mu.Lock()
	for _, seg := range drop {
		// A segment that gained work meanwhile cannot exist: only the current
		// segment receives appends and it is never dropped.
		delete(s.segs, seg)
	}
	s.mu.Unlock()
	s.log.Debug("spool dropped delivered segments", "segments", len(drop), "first", drop[0], "last", drop[len(drop)-1])
	return nil
}

func (s *Spool) saveCounters() {
	s.mu.Lock()
	changed := map[string]uint64{}
	for d, n := range s.delivered {
		if s.deliveredSave[d] != n {
			changed[d] = n
		}
	}
	s.mu.Unlock()
	if len(changed) == 0 {
		return
	}
	s.dropMu.RLock()
	defer s.dropMu.RUnlock()
	err := s.db.Update(func(txn *badger.Txn) error {
		for d, n := range changed {
			if err := txn.Set([]byte("xdelv"+d), binary.BigEndian.AppendUint64(nil, n)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.mu.Lock()
		maps.Copy(s.deliveredSave, changed)
		s.mu.Unlock()
	}
}

func (s *Spool) refreshFreeDisk() {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.cfg.Dir, &st); err != nil {
		return
	}
	s.mu.Lock()
	s.freeDisk = int64(st.Bavail) * int64(st.Bsize)
	s.mu.Unlock()
}

// Close stops the spool. Appends already queued are committed first.
func (s *Spool) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	close(s.stop)
	s.wg.Wait()
	s.saveCounters()
	err := s.db.Close()
	_ = s.lock.Close()
	if err != nil {
		return fmt.Errorf("close spool %s: %w", s.cfg.Dir, err)
	}
	return nil
}

// Dir is where the spool lives.
func (s *Spool) Dir() string { return s.cfg.Dir }
