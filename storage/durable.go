package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hl7edge/hl7edge/storage/syncgate"
	"golang.org/x/sys/unix"
)

// ErrStorageFault: a sync of the spool's files failed. Until the spool has
// been closed and re-opened from disk it answers no message as stored.
//
// After a failed fsync Linux may already have marked the failed pages clean
// and dropped their error, so a later sync "succeeds" while those pages
// never reached the card, and Badger's replay stops at the first bad entry
// and drops every later group, ACKed or not (PostgreSQL's "fsyncgate"
// lesson). Only a re-open that reads the disk again knows what is there.
var ErrStorageFault = errors.New("spool storage fault")

// errReopening: the spool is between closing and re-opening after a fault.
var errReopening = fmt.Errorf("%w: the spool is being re-opened from disk", ErrStorageFault)

// inDoubt is a message of a group whose sync failed: its sender was told it
// was not stored, so after the re-open it must not be stored either.
type inDoubt struct {
	seq, seg uint64
	dests    []string
	undeliv  bool
	remote   []byte // its pull source's remembered ID, or nil
	trace    [][]byte
}

// syncLogs makes every write made so far durable: the commit log, which
// holds every write but large values, and, when vlog is set, Badger's value
// logs (where values of largeValue and more live) and memtable logs
// (which hold their pointers). The fault is sticky under syncMu: once one
// sync has failed, every later caller fails too, without syncing, until
// the re-open. Linux reports a failed write-back once per open file, and
// all callers share the files, so a sync after a failure could otherwise
// "succeed" for data that never reached the card. For the same reason a
// sync that failed for another writer on the file system since the spool
// was opened (its gate's epoch moved) fails this one: the card may have
// dropped the spool's unsynced writes with that writer's.
func (s *Spool) syncLogs(vlog bool) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if err := s.faultErr(); err != nil {
		return err
	}
	err := s.gate.Sync(s.goodEpoch, func() error {
		if err := s.clog.Sync(); err != nil || !vlog {
			return err
		}
		return s.syncFiles(true)
	})
	if err != nil {
		// The gate has counted it already (or it is another's, refused).
		s.setFault(err)
	}
	return err
}

// syncFiles syncs Badger's own logs without looking at the fault; syncMu
// is held. With vlog false only the memtable logs.
func (s *Spool) syncFiles(vlog bool) error {
	if vlog {
		if err := s.vlog.syncAll(); err != nil {
			return err
		}
	}
	return s.mem.syncAll()
}

// faultErr is the error an Append gets while the spool is faulted, or nil.
func (s *Spool) faultErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fault == nil {
		return nil
	}
	return fmt.Errorf("%w in %s: a disk sync failed (%v); messages are refused until the spool is re-opened from disk, which it retries every %v (the sender should retry; check the card: dmesg)",
		ErrStorageFault, s.cfg.Dir, s.fault, faultRetry)
}

// faultLocked records a failed sync; s.mu is held.
func (s *Spool) faultLocked(err error, doubt []inDoubt) {
	if s.fault == nil {
		s.fault = err
		s.log.Error("spool disk sync failed: refusing messages until the spool is re-opened from disk", "dir", s.cfg.Dir, "err", err)
	}
	s.inDoubt = append(s.inDoubt, doubt...)
	s.storageErr = fmt.Sprintf("spool disk sync failed: %v (messages are answered AE until it is re-opened from disk; check the card)", s.fault)
}

// markFault records a failed write of the commit log's outside syncLogs:
// an append that sealed a full segment flushed it there, and the card may
// have dropped the unsynced writes of every writer on the file system with
// it, so the gate tells them too.
func (s *Spool) markFault(err error) {
	if !errors.Is(err, syncgate.ErrFailedSince) { // another's failure, counted already
		s.gate.Failed(err)
	}
	s.setFault(err)
}

// setFault records a failed sync and, the first time, leaves the mark
// that makes the next open read the tables back: a faulted log repeats its
// error on every later append, and one mark (one directory sync) does.
func (s *Spool) setFault(err error) {
	s.mu.Lock()
	first := s.fault == nil
	s.faultLocked(err, nil)
	s.mu.Unlock()
	if first {
		s.markSyncFailed()
	}
}

// tryReopen closes the faulted spool, forgets what the operating system
// cached of its files, opens it again from disk, removes what was answered
// as not stored, and re-reads its accounting. It runs on the commit loop,
// so no group is committed meanwhile. On failure the spool stays faulted.
func (s *Spool) tryReopen() {
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if err := s.reopenLocked(); err != nil {
		s.mu.Lock()
		s.storageErr = fmt.Sprintf("spool disk sync failed: %v; re-opening it failed: %v (messages are answered AE; check the card)", s.fault, err)
		// Reading every table again every few seconds cannot mend one.
		s.damaged = errors.Is(err, errTablesDamaged)
		s.mu.Unlock()
		s.log.Error("spool re-open after a failed sync failed; still refusing messages", "dir", s.cfg.Dir, "err", err)
		return
	}
	s.log.Warn("spool re-opened after a failed sync", "dir", s.cfg.Dir, "reopens", s.reopens)
}

func (s *Spool) reopenLocked() error {
	s.syncMu.Lock()
	_ = s.mem.close()
	_ = s.vlog.close()
	if s.clog != nil {
		_ = s.clog.Close()
		s.clog = nil
	}
	s.syncMu.Unlock()
	// What the re-open reads and writes from here on is what counts.
	s.goodEpoch = s.gate.Epoch()
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			s.log.Warn("closing the faulted spool", "err", err)
		}
		s.db = nil
	}
	dropCache(s.cfg.Dir)
	dropCache(filepath.Join(s.cfg.Dir, commitLogDir))
	if s.reopenHook != nil {
		s.reopenHook()
	}
	if err := checkTableFooters(s.cfg.Dir); err != nil {
		return fmt.Errorf("%w after a failed disk sync; the commit log still holds what the table held: stop the daemon and run `hl7edge spool salvage` (docs/power-loss.md)", err)
	}
	db, err := badger.Open(s.bopts)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	s.db = db
	err = s.checkTables()
	if err == nil {
		err = s.openCommitLog(s.key)
	}
	if err == nil {
		err = s.replayCommitLog()
	}
	if err == nil {
		err = s.recoverLocked()
	}
	if err != nil {
		// Half re-opened is not open: nothing may work from accounting
		// that was not rebuilt from this disk.
		_ = s.db.Close()
		s.db = nil
		return err
	}
	return nil
}

// recoverLocked brings a freshly opened DB and the accounting into line
// with what was answered, and clears the fault.
func (s *Spool) recoverLocked() error {
	if err := s.forgetInDoubt(); err != nil {
		return err
	}
	if err := s.dropHalfKills(); err != nil {
		return err
	}
	// The proof that the disk takes writes again, and from here on the
	// log's old records (the failed group's among them) are never replayed.
	if err := s.restartCommitLog(); err != nil {
		return err
	}
	if err := s.clearSyncFailed(); err != nil {
		return fmt.Errorf("remove %s: %w", syncFailedMark, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetAccountingLocked()
	if err := s.load(); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	// load only ever raises lastSeq and curSeg: numbers are never reused,
	// even for what the disk lost.
	s.curSegCount = 0
	s.durableSeq = s.lastSeq
	s.fault, s.inDoubt, s.storageErr = nil, nil, ""
	s.reopens++
	return nil
}

// forgetInDoubt deletes what groups whose sync failed had written, so that
// what was answered AE is not delivered and a pull source's retried message
// is not taken for a duplicate. It writes past the commit log: the re-open
// then syncs Badger and starts the log afresh. A dead letter that was being re-queued
// is left as the disk has it: either still dead or queued again, under its
// own GUID either way.
func (s *Spool) forgetInDoubt() error {
	s.mu.Lock()
	doubt := s.inDoubt
	s.mu.Unlock()
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, d := range doubt {
		keys := d.trace
		if d.seq != 0 {
			keys = append(keys, msgKey(d.seg, d.seq), seqKey(famUndeliv, d.seq))
		}
		for _, dest := range d.dests {
			keys = append(keys, namedSeqKey(famQueue, dest, d.seq))
		}
		if d.remote != nil {
			keys = append(keys, d.remote)
		}
		for _, k := range keys {
			if err := wb.Delete(k); err != nil {
				return fmt.Errorf("forget messages answered AE: %w", err)
			}
		}
	}
	// Always one write, so the sync that restarts the commit log proves
	// the disk works.
	if err := wb.Set(keyReopened, nil); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("forget messages answered AE: %w", err)
	}
	return nil
}

var keyReopened = []byte("xreopened")

// resetAccountingLocked empties what load fills; the delivered counters
// (saved now and then) are kept. queued keeps its keys: every configured
// destination has one from Open on.
func (s *Spool) resetAccountingLocked() {
	s.segs = map[uint64]*segInfo{}
	for d := range s.queued {
		s.queued[d] = 0
	}
	s.dead = map[string]int64{}
	s.deadBytes, s.undeliv, s.undelivBytes = 0, 0, 0
}

// dropCache asks the kernel to forget the cached pages of the spool's
// files, so that the re-open reads what is on the card, not pages whose
// write failed and that the kernel kept as if written. Best effort: a file
// it cannot open is read as it is.
func dropCache(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		_ = f.Close()
	}
}

// faultRetry is how often a faulted spool tries to re-open from disk: a
// card that works again is taking messages within about this long.
const faultRetry = 2 * time.Second
