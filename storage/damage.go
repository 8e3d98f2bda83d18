package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/badger/v4/y"
	"google.golang.org/protobuf/proto"
)

// syncFailedMark is the file the spool keeps in its directory from a failed
// sync until a re-open has read every table of Badger's back from the card.
//
// A card that fails a flush drops every write it had not made durable, and
// Linux tells only the sync that asked for the flush. A table Badger was
// writing then (a memtable's flush, a compaction) can lose blocks while
// Badger's own sync of it succeeds, and nothing reads it until a query or
// a compaction trips over it, maybe days later. Until the tables are read
// back, the commit log keeps every segment from the failure on (release
// waits for noFailedSync), so a damaged table's messages are still in the
// log and `hl7edge spool salvage` brings them back. The mark makes the
// check survive a power cut or a restart that comes before the re-open.
const syncFailedMark = "SYNC-FAILED"

// errTablesDamaged: a table Badger names is damaged on the card.
var errTablesDamaged = errors.New("a table of the spool is damaged on the card")

// markSyncFailed leaves the mark, durably if the card still lets it: the
// card has just failed a sync, so a failure here is logged, not fatal.
func (s *Spool) markSyncFailed() {
	p := filepath.Join(s.cfg.Dir, syncFailedMark)
	since := s.gate.Epoch()
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600)
	if err == nil {
		err = f.Close()
	}
	if err == nil {
		err = s.syncOwnDir(since)
	}
	if err != nil {
		s.log.Warn("spool: could not leave the mark that makes the next open read every table back", "file", p, "err", err)
	}
}

// syncFailedSince says whether the mark is there: a sync failed and no
// open has checked the tables since.
func syncFailedSince(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, syncFailedMark))
	return !errors.Is(err, fs.ErrNotExist)
}

// checkTables reads every table back from the card (the caller dropped the
// kernel's cached pages of them first) when a sync failed since the last
// check. Checksum errors fail the open: the commit log is then left as it
// is, for salvage.
func (s *Spool) checkTables() error {
	if !syncFailedSince(s.cfg.Dir) {
		return nil
	}
	if err := verifyTables(s.db); err != nil {
		return fmt.Errorf("%w after a failed disk sync (%w); the commit log still holds what the table's memtable held: stop the daemon and run `hl7edge spool salvage` (docs/power-loss.md)", errTablesDamaged, err)
	}
	s.log.Info("spool: every table read back from the card after a failed sync", "dir", s.cfg.Dir)
	return nil
}

// clearSyncFailed removes the mark once the tables are checked and the
// commit log restarted.
func (s *Spool) clearSyncFailed() error {
	err := os.Remove(filepath.Join(s.cfg.Dir, syncFailedMark))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = s.syncOwnDir(s.goodEpoch)
	}
	return err
}

// syncOwnDir makes the mark's coming or going durable: a flush like any
// other of the spool's, so it runs in the gate, for writes begun in epoch
// since. It takes the gate: never call it from inside a Sync's function.
func (s *Spool) syncOwnDir(since uint64) error {
	d, err := os.Open(s.cfg.Dir)
	if err != nil {
		return err
	}
	defer d.Close()
	sync := s.dirSyncHook
	if sync == nil {
		sync = (*os.File).Sync
	}
	return s.gate.Sync(since, func() error { return sync(d) })
}

// noFailedSync says whether no sync has failed on the spool's file system
// since it was (re-)opened. It takes syncMu and passes the gate, so a
// failing sync still under way is waited for: a table whose own sync came
// after that failure is not taken for durable.
func (s *Spool) noFailedSync() bool {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.faultErr() != nil || syncFailedSince(s.cfg.Dir) {
		return false
	}
	return s.gate.Sync(s.goodEpoch, func() error { return nil }) == nil
}

func (s *Spool) tablesDamaged() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.damaged
}

// verifyTables is db.VerifyChecksum, made safe: in Badger v4.9.6 a block
// that cannot be read at all (its compressed bytes garbled) makes
// Table.VerifyChecksum format the offset of the nil block it got back
// (table/table.go), a nil dereference instead of the error.
func verifyTables(db *badger.DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("a block cannot be read: %v", r)
		}
	}()
	return db.VerifyChecksum()
}

// checkTableFooters reads the footer and index of every table file in dir
// the way Badger's open does, but here, where a failure is an error:
// Badger opens tables in goroutines of its own, and a table whose end a
// failed flush cut (its index length read as zero) makes one of them
// panic, which no caller can recover and which would end the daemon at
// every start. Run before badger.Open after a failed sync; the blocks
// themselves are checked once Badger is open (verifyTables).
func checkTableFooters(dir string) error {
	tables, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return err
	}
	for _, p := range tables {
		if err := checkTableFooter(p); err != nil {
			return fmt.Errorf("%w: %s: %w", errTablesDamaged, filepath.Base(p), err)
		}
	}
	return nil
}

// checkTableFooter checks one table's end: [index][index length: 4]
// [checksum][checksum length: 4], the index matching its checksum (which
// covers it as stored, encrypted or not).
func checkTableFooter(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	end := len(b)
	field := func(n int) ([]byte, bool) {
		if n <= 0 || n > end {
			return nil, false
		}
		end -= n
		return b[end : end+n], true
	}
	raw, ok := field(4)
	if !ok {
		return errors.New("shorter than its footer")
	}
	sum, ok := field(int(binary.BigEndian.Uint32(raw)))
	if !ok {
		return errors.New("checksum length out of range")
	}
	want := &pb.Checksum{}
	if err := proto.Unmarshal(sum, want); err != nil {
		return fmt.Errorf("checksum unreadable: %w", err)
	}
	if raw, ok = field(4); !ok {
		return errors.New("no index length")
	}
	index, ok := field(int(binary.BigEndian.Uint32(raw)))
	if !ok {
		return errors.New("index length out of range")
	}
	return y.VerifyChecksum(index, want)
}
