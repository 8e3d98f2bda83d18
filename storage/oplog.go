package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/dgraph-io/badger/v4"
	"github.com/klauspost/compress/s2"
)

// Every write to Badger also goes into the commit log (storage/commitlog),
// as a record of operations, in the order Badger applied them: writeMu is
// held from Badger's commit to the log's append. The log is what makes a
// group commit durable; Badger writes without syncing, and at every open
// the log's records are applied again on top of whatever Badger kept
// (docs/design.md, "The commit log"). Sets and deletes applied again in
// order leave every key as the last one left it, so a record applied twice
// is harmless.
//
// A value of largeValue or more is the one exception: it goes to
// Badger's value log and is synced there (syncLogs with vlog), and the
// commit log holds only a marker, so that a 4 MiB report is not written to
// the card twice.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const (
	opSet    = 1
	opSetTTL = 2
	opDelete = 3
	opDrop   = 4 // DropPrefix of the listed prefixes
	opLarge  = 5 // a set kept out of the log: synced in the value log
	// opS2 starts a record whose operations are one S2 block: lab results
	// shrink about 1.4x, and at one message a sync that is a sector or
	// two less written to the card per message.
	opS2 = 6
)

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendSetOp(b []byte, e *badger.Entry) []byte {
	switch {
	case len(e.Value) >= largeValue:
		// The value's size and CRC let a replay tell whether Badger's value
		// log kept it (largeKept).
		b = appendBytes(append(b, opLarge), e.Key)
		b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(e.Value, castagnoli))
		return binary.AppendUvarint(b, uint64(len(e.Value)))
	case e.ExpiresAt != 0:
		b = appendBytes(append(b, opSetTTL), e.Key)
		b = binary.LittleEndian.AppendUint64(b, e.ExpiresAt)
		return appendBytes(b, e.Value)
	default:
		return appendBytes(appendBytes(append(b, opSet), e.Key), e.Value)
	}
}

// op is one decoded operation.
type op struct {
	kind      byte
	key, val  []byte
	expiresAt uint64
	prefixes  [][]byte
	// size and sum of an opLarge's value
	size uint64
	sum  uint32
}

var errBadOp = errors.New("commit log record does not decode")

func takeBytes(b []byte) ([]byte, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, errBadOp
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}

// compressAt is the smallest record worth compressing.
const compressAt = 512

// packOps returns the record to log for ops: S2-compressed into *buf
// (kept for the next call) when that saves at least a sixteenth. Ops over
// maxUnpacked stay as they are, so that every record written decodes.
func packOps(buf *[]byte, ops []byte) []byte {
	if len(ops) < compressAt || len(ops) > maxUnpacked {
		return ops
	}
	n := s2.MaxEncodedLen(len(ops))
	if n < 0 {
		return ops
	}
	if cap(*buf) < n+1 {
		*buf = make([]byte, n+1)
	}
	b := (*buf)[:n+1]
	c := s2.Encode(b[1:], ops)
	if len(c)+1 > len(ops)-len(ops)/16 {
		return ops
	}
	b[0] = opS2
	return b[:len(c)+1]
}

// maxUnpacked bounds what a compressed record may claim to hold, so that a
// damaged or forged length cannot make a replay allocate without limit. A
// transaction's operations stay far below it: Badger refuses a batch over
// a sixth or so of its 64 MiB memtable, and values of largeValue and
// more are only marked in the log.
const maxUnpacked = 64 << 20

// decodeOps splits one record into its operations.
func decodeOps(b []byte, fn func(op) error) error {
	if len(b) > 0 && b[0] == opS2 {
		n, err := s2.DecodedLen(b[1:])
		if err != nil || n > maxUnpacked {
			return fmt.Errorf("%w: compressed record", errBadOp)
		}
		if b, err = s2.Decode(make([]byte, n), b[1:]); err != nil {
			return fmt.Errorf("%w: compressed record: %w", errBadOp, err)
		}
		if len(b) > 0 && b[0] == opS2 {
			return fmt.Errorf("%w: compressed twice", errBadOp)
		}
	}
	for len(b) > 0 {
		o := op{kind: b[0]}
		var err error
		b = b[1:]
		switch o.kind {
		case opSet, opDelete:
			o.key, b, err = takeBytes(b)
			if err == nil && o.kind == opSet {
				o.val, b, err = takeBytes(b)
			}
		case opLarge:
			if o.key, b, err = takeBytes(b); err == nil {
				if len(b) < 4 {
					return errBadOp
				}
				o.sum, b = binary.LittleEndian.Uint32(b), b[4:]
				n, k := binary.Uvarint(b)
				if k <= 0 {
					return errBadOp
				}
				o.size, b = n, b[k:]
			}
		case opSetTTL:
			if o.key, b, err = takeBytes(b); err == nil {
				if len(b) < 8 {
					return errBadOp
				}
				o.expiresAt, b = binary.LittleEndian.Uint64(b), b[8:]
				o.val, b, err = takeBytes(b)
			}
		case opDrop:
			n, k := binary.Uvarint(b)
			if k <= 0 || n > uint64(len(b)) {
				return errBadOp
			}
			b = b[k:]
			for range n {
				var p []byte
				if p, b, err = takeBytes(b); err != nil {
					break
				}
				o.prefixes = append(o.prefixes, p)
			}
		default:
			return fmt.Errorf("%w: operation %d", errBadOp, o.kind)
		}
		if err != nil {
			return err
		}
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

// recordOps decodes one record's operations.
func recordOps(rec []byte) ([]op, error) {
	var ops []op
	err := decodeOps(rec, func(o op) error { ops = append(ops, o); return nil })
	return ops, err
}

// holds says whether v is the value an opLarge marks (its size and CRC).
func (o op) holds(v []byte) bool {
	return uint64(len(v)) == o.size && crc32.Checksum(v, castagnoli) == o.sum
}

// unset says whether a record that is left out must take back what o
// set: every set but the last sequence number's, which only ever rises.
func (o op) unset() bool {
	return (o.kind == opSet || o.kind == opSetTTL || o.kind == opLarge) && string(o.key) != string(keyLastSeq)
}

// wtxn is a Badger read-write transaction whose writes also go into the
// commit log when it commits (commitTxn).
type wtxn struct {
	*badger.Txn
	ops []byte
}

func (s *Spool) newTxn() *wtxn { return &wtxn{Txn: s.db.NewTransaction(true)} }

func (t *wtxn) SetEntry(e *badger.Entry) error {
	if err := t.Txn.SetEntry(e); err != nil {
		return err
	}
	// A value of largeValue or more is only marked in the log: its
	// writer syncs the value log (syncLogs(true)) before it answers.
	t.ops = appendSetOp(t.ops, e)
	return nil
}

func (t *wtxn) Set(k, v []byte) error { return t.SetEntry(badger.NewEntry(k, v)) }

func (t *wtxn) Delete(k []byte) error {
	if err := t.Txn.Delete(k); err != nil {
		return err
	}
	t.ops = appendBytes(append(t.ops, opDelete), k)
	return nil
}

// commitTxn commits t to Badger and appends its operations to the commit
// log, both under writeMu so that the log's order is Badger's. The
// operations are durable only after the next syncLogs.
func (s *Spool) commitTxn(t *wtxn) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := t.Txn.Commit(); err != nil {
		return err
	}
	if len(t.ops) == 0 {
		return nil
	}
	return s.logAppend(t.ops)
}

// logAppend appends one record to the commit log, compressed when that
// pays (packOps); writeMu is held. A failed append faults the spool:
// Badger holds a write the log does not.
func (s *Spool) logAppend(rec []byte) error {
	if err := s.clog.Append(packOps(&s.packBuf, rec)); err != nil {
		s.markFault(err)
		return fmt.Errorf("%w: %w", ErrStorageFault, err)
	}
	return nil
}

// update runs fn in a read-write transaction and commits it through the
// commit log (db.Update's counterpart).
func (s *Spool) update(fn func(txn *wtxn) error) error {
	t := s.newTxn()
	defer t.Discard()
	if err := fn(t); err != nil {
		return err
	}
	return s.commitTxn(t)
}

// batch collects writes and commits them through the commit log in
// transactions of txnBudget (badger.WriteBatch's counterpart, which
// commits on its own goroutines and so could not keep the log's order).
type batch struct {
	s    *Spool
	t    *wtxn
	size int64
}

func (s *Spool) newBatch() *batch { return &batch{s: s, t: s.newTxn()} }

func (b *batch) add(fn func(t *wtxn) error, size int64) error {
	if b.size > 0 && b.size+size > b.s.txnBudget() {
		if err := b.commit(); err != nil {
			return err
		}
	}
	err := fn(b.t)
	if errors.Is(err, badger.ErrTxnTooBig) {
		if err = b.commit(); err == nil {
			err = fn(b.t)
		}
	}
	b.size += size
	return err
}

func (b *batch) commit() error {
	err := b.s.commitTxn(b.t)
	b.t.Discard()
	b.t, b.size = b.s.newTxn(), 0
	return err
}

func (b *batch) Set(k, v []byte) error {
	return b.add(func(t *wtxn) error { return t.Set(k, v) }, int64(len(k)+len(v))+64)
}

func (b *batch) SetEntry(e *badger.Entry) error {
	return b.add(func(t *wtxn) error { return t.SetEntry(e) }, int64(len(e.Key)+len(e.Value))+64)
}

func (b *batch) Delete(k []byte) error {
	return b.add(func(t *wtxn) error { return t.Delete(k) }, int64(len(k))+64)
}

// Flush commits what is left.
func (b *batch) Flush() error {
	if len(b.t.ops) == 0 {
		return nil
	}
	return b.commit()
}

// Cancel drops what was not flushed.
func (b *batch) Cancel() { b.t.Discard() }

// dropPrefix drops keys by prefix and logs it; dbMu is held exclusively.
// DropPrefix first flushes every memtable into a table Badger syncs, so
// every record logged before it is durable in Badger and the log's older
// segments are released; but only when it did: with no key under any of
// the prefixes it returns at once, and flushes nothing.
func (s *Spool) dropPrefix(prefixes ...[]byte) error {
	cur, flushed, err := s.dropPrefixLogged(prefixes)
	if err != nil {
		return err
	}
	// The drop's flush wrote tables that a failed flush may have cut
	// short (damage.go): then the log keeps their records. And those
	// tables point into the value log, which Badger did not sync: it is
	// synced before the log lets go of the bodies' copies.
	if flushed && s.noFailedSync() && s.syncLogs(true) == nil {
		s.clog.Release(cur)
	}
	return nil
}

// dropPrefixLogged drops the prefixes in Badger and appends the drop to
// the commit log, under writeMu; it says which log segment was current
// and whether the drop flushed every memtable there was.
func (s *Spool) dropPrefixLogged(prefixes [][]byte) (uint64, bool, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	before, err := logFiles(s.cfg.Dir, walExt)
	if err != nil {
		return 0, false, err
	}
	if err := s.db.DropPrefix(prefixes...); err != nil {
		return 0, false, err
	}
	rec := binary.AppendUvarint([]byte{opDrop}, uint64(len(prefixes)))
	for _, p := range prefixes {
		rec = appendBytes(rec, p)
	}
	if err := s.logAppend(rec); err != nil {
		return 0, false, err
	}
	after, err := logFiles(s.cfg.Dir, walExt)
	return s.clog.Current(), err == nil && flushedAll(before, after), nil
}

// flushedAll says whether every memtable log listed before is gone after:
// Badger removes one only once its memtable is in a synced table.
func flushedAll(before, after []logFile) bool {
	return len(before) == 0 || len(after) == 0 || after[0].fid > before[len(before)-1].fid
}
