package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"
)

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
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool directory %s: %w (create it or set spool.dir to a writable directory)", cfg.Dir, err)
	}
	privateDir(cfg.Dir, o.Log)
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
	if syncFailedSince(cfg.Dir) {
		// A sync failed and no open read the tables back since: read them
		// from the card, not from pages the kernel kept (damage.go).
		dropCache(cfg.Dir)
		if err := checkTableFooters(cfg.Dir); err != nil {
			_ = lock.Close()
			return nil, fmt.Errorf("%w: open %s: %w after a failed disk sync (nothing was changed or deleted; the commit log still holds what the table held: run `hl7edge spool salvage`, see docs/power-loss.md)", ErrUnreadable, cfg.Dir, err)
		}
	}
	bopts := badgerOptions(cfg, key, o.Log)
	db, err := badger.Open(bopts)
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("%w: open %s: %w (nothing was changed or deleted; `hl7edge spool salvage` copies what is readable into a fresh spool, see docs/power-loss.md)", ErrUnreadable, cfg.Dir, err)
	}
	s := &Spool{
		cfg: cfg, db: db, bopts: bopts, key: key, lock: lock, log: o.Log, now: o.Now,
		gate: o.Gate, goodEpoch: o.Gate.Epoch(),
		mem:    newLogSyncer(cfg.Dir, walExt, fdatasync),
		vlog:   newLogSyncer(cfg.Dir, vlogExt, fdatasync),
		reqs:   make(chan *appendReq, 1024),
		stop:   make(chan struct{}),
		gcKick: make(chan struct{}, 1), gcEvery: o.GCInterval,
		segs: map[uint64]*segInfo{}, queued: map[string]int64{}, delivered: map[string]uint64{},
		deliveredSave: map[string]uint64{}, dead: map[string]int64{}, notify: map[string]chan struct{}{},
		dests: slices.Clone(o.Destinations),
		lazy:  &lazyTrace{ch: make(chan traceKV, lazyQueue)},
	}
	for _, d := range s.dests {
		s.queued[d] = 0
		s.notify[d] = make(chan struct{}, 1)
	}
	if err := s.openCommitLog(key); err != nil {
		_ = db.Close()
		_ = lock.Close()
		return nil, fmt.Errorf("%w: commit log in %s: %w (nothing was changed or deleted; `hl7edge spool salvage` copies what is readable into a fresh spool, see docs/power-loss.md)", ErrUnreadable, cfg.Dir, err)
	}
	err = s.bringForward()
	if err == nil {
		err = s.load()
	}
	if err != nil {
		_ = s.clog.Close()
		_ = db.Close()
		_ = lock.Close()
		return nil, fmt.Errorf("%w: read %s: %w (nothing was changed or deleted; `hl7edge spool salvage` copies what is readable into a fresh spool, see docs/power-loss.md)", ErrUnreadable, cfg.Dir, err)
	}
	if err := s.moveOldHeads(); err != nil {
		// Traces are not messages: the spool serves without the old ones.
		s.log.Warn("spool: older message traces stay unreadable", "err", err)
	}
	s.durableSeq = s.lastSeq
	s.atStart = maps.Clone(s.queued)
	s.logBacklog()
	s.refreshFreeDisk()
	s.wg.Add(3)
	go s.commitLoop()
	go s.gcLoop()
	go s.lazyLoop()
	return s, nil
}

// logBacklog says, in one line, what the spool held when it opened: after a
// power cut or a long outage an operator sees how many acknowledged messages
// are waiting for each destination before delivery drains them.
func (s *Spool) logBacklog() {
	var total int64
	per := make([]any, 0, len(s.dests))
	for _, d := range s.dests {
		total += s.queued[d]
		per = append(per, slog.Int64(d, s.queued[d]))
	}
	var dead int64
	for _, n := range s.dead {
		dead += n
	}
	st := s.clog.Stats()
	s.log.Info("spool opened", "dir", s.cfg.Dir, "waiting", total, slog.Group("queued", per...),
		"dead_letters", dead, "undeliverable", s.undeliv,
		slog.Group("commit_log", "replayed", s.replayed, "direct_io", st.Direct))
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
					s.lastSeq = max(s.lastSeq, binary.BigEndian.Uint64(v))
				}
				return nil
			}); err != nil {
				return err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		var maxSeg uint64
		orphans := map[string]int64{}
		// Family by family: the trace families, which may hold millions of
		// keys, are not walked at open.
		for _, fam := range []byte{famMessage, famQueue, famDead, famUndeliv, famMeta} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{fam}, PrefetchValues: false})
			err := s.loadFamily(it, &maxSeg, orphans)
			it.Close()
			if err != nil {
				return err
			}
		}
		s.curSeg = max(s.curSeg, maxSeg+1)
		for d, n := range orphans {
			s.log.Warn("spool holds messages for a destination that is no longer configured; they keep their disk space until it is configured again or they are purged",
				"destination", d, "queued", n)
		}
		return nil
	})
}

// loadFamily reads one family's keys into the accounting.
func (s *Spool) loadFamily(it *badger.Iterator, maxSeg *uint64, orphans map[string]int64) error {
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
			si.stamp(receivedOf(item))
			*maxSeg = max(*maxSeg, seg)
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
			s.lastSeq = max(s.lastSeq, seqOf(k))
			if _, known := s.queued[dest]; known {
				s.queued[dest]++
			} else {
				orphans[dest]++
			}
		case famDead:
			if dest, ok := nameOf(k); ok {
				s.dead[dest]++
				s.deadBytes += int64(item.ValueSize())
				// A salvage restores dead letters under their old
				// numbers: the next message is numbered above them.
				s.lastSeq = max(s.lastSeq, seqOf(k))
			}
		case famUndeliv:
			s.undeliv++
			s.undelivBytes += int64(item.ValueSize())
			s.lastSeq = max(s.lastSeq, seqOf(k))
		case famMeta:
			if name, ok := cutPrefix(k, "xdelv"); ok {
				_ = item.Value(func(v []byte) error {
					if len(v) == 8 {
						// A re-open keeps what was counted since the last save.
						s.delivered[name] = max(s.delivered[name], binary.BigEndian.Uint64(v))
						s.deliveredSave[name] = binary.BigEndian.Uint64(v)
					}
					return nil
				})
			}
			if string(k) == string(keyTraceBytes) {
				_ = item.Value(func(v []byte) error {
					if len(v) == 8 {
						s.traceBytes = int64(binary.BigEndian.Uint64(v))
						s.traceBytesSave = s.traceBytes
					}
					return nil
				})
			}
		}
	}
	return nil
}

var keyTraceBytes = []byte("xtracebytes")

// receivedOf reads a stored message's receive time (UnixNano) from its
// record's fixed header, without copying the record; 0 if unreadable.
func receivedOf(item *badger.Item) int64 {
	var t int64
	_ = item.Value(func(v []byte) error {
		if len(v) >= 33 && v[0] == recordVersion {
			t = int64(binary.BigEndian.Uint64(v[25:33]))
		}
		return nil
	})
	return t
}

// dropHalfKills removes dead-letter copies whose message is still queued
// for the same destination under the same number. Kill writes the copy,
// syncs, and only then releases the queue entry; a cut in between leaves
// both, and the message is still owed, so the copy goes. (A re-queued dead
// letter gets a new number, so the two never stand together otherwise.)
func (s *Spool) dropHalfKills() error {
	var half [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{famDead}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			dest, ok := nameOf(k)
			if !ok {
				continue
			}
			if _, err := txn.Get(namedSeqKey(famQueue, dest, seqOf(k))); err == nil {
				half = append(half, k)
			} else if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
		}
		return nil
	})
	if err != nil || len(half) == 0 {
		return err
	}
	s.log.Warn("spool removes dead-letter copies of messages that are still queued (a kill was cut short); the messages stay queued", "count", len(half))
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range half {
		if err := wb.Delete(k); err != nil {
			return err
		}
	}
	return wb.Flush()
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
	s.saveCounters(true)
	s.syncMu.Lock()
	if s.clog != nil && s.faultErr() == nil {
		// What was logged since the last group (delivery marks, counters)
		// is not lost with the process; Badger's close flushes it too.
		// Through the gate like every flush of the spool's: its failure
		// may cost the other writers on the card their unsynced writes.
		if err := s.gate.Sync(s.goodEpoch, s.clog.Sync); err != nil {
			s.setFault(err) // the mark: the next open reads the tables back
		}
	}
	_ = s.mem.close()
	_ = s.vlog.close()
	s.syncMu.Unlock()
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	var err error
	if s.db != nil { // nil when a re-open after a fault failed
		err = s.db.Close()
	}
	s.emptyLogAtClose(err == nil && s.db != nil)
	_ = s.lock.Close()
	if err != nil {
		return fmt.Errorf("close spool %s: %w", s.cfg.Dir, err)
	}
	return nil
}

// Dir is where the spool lives.
func (s *Spool) Dir() string { return s.cfg.Dir }

// privateDir makes the spool directory 0700: it holds patient data, and
// only this user may enter it, whatever the umask made of the files Badger
// creates inside. A directory this user cannot change (another owner) is
// left as it is, with a warning.
func privateDir(dir string, log *slog.Logger) {
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		log.Warn("spool directory is open to other users and could not be made private; chown it to the user hl7edge runs as",
			"dir", dir, "mode", fi.Mode().Perm().String(), "err", err)
	}
}

// bringForward makes Badger's files hold everything the commit log does, at
// open: the tables read back first if a sync failed before (damage.go),
// the log replayed, a Kill a cut split undone, and the log started afresh.
func (s *Spool) bringForward() error {
	if err := s.checkTables(); err != nil {
		return err
	}
	if err := s.replayCommitLog(); err != nil {
		return err
	}
	if err := s.dropHalfKills(); err != nil {
		return err
	}
	if err := s.restartCommitLog(); err != nil {
		return err
	}
	return s.clearSyncFailed()
}

// emptyLogAtClose starts the commit log afresh once Badger's close has made
// everything durable in its own files (closed: it did), then closes it. A
// cleanly stopped spool then holds no record, so a firmware rolled back to
// opens it whatever it knows of the log: a build from before the log
// ignores its directory, and one from before compressed records reads an
// empty log. After a cut the records stay, and this firmware replays them.
func (s *Spool) emptyLogAtClose(closed bool) {
	if s.clog == nil {
		return
	}
	if closed && s.noFailedSync() {
		// The new header's flush runs in the gate like every other: its
		// failure may cost the other writers their unsynced writes.
		if err := s.gate.Sync(s.goodEpoch, s.clog.Restart); err != nil {
			s.log.Warn("spool: the commit log keeps its records after the close (the next open replays them)", "err", err)
		}
	}
	_ = s.clog.Close()
}
