package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2/z"
)

// SalvageReport says what Salvage saved, and from where.
type SalvageReport struct {
	// MovedTo is where the unreadable spool now is, exactly as it was:
	// nothing in it is changed or deleted.
	MovedTo string `json:"moved_to"`
	// Method is how it was read: "badger" when Badger opened a copy with
	// checksums off, "tables+logs" when the tables and the memtable logs
	// were read one by one.
	Method         string   `json:"method"`
	Queued         int      `json:"queued"`             // messages re-queued, with their GUIDs, for the destinations that still owed them
	Delivered      int      `json:"delivered"`          // messages every destination had taken: not re-queued
	Dead           int      `json:"dead"`               // dead letters kept as dead letters
	Undeliverable  int      `json:"undeliverable"`      // kept in the undeliverable store
	RemoteIDs      int      `json:"remote_ids"`         // pull sources' remembered IDs (so nothing is stored twice)
	QueuedNoRecord int      `json:"queued_unreadable"`  // queue entries whose message could not be read: lost, listed in Problems
	LogRecords     int      `json:"commit_log_records"` // commit-log records applied on top of what Badger's files held
	Traces         int      `json:"traces"`             // message traces copied (hl7edge trace answers as before)
	Problems       []string `json:"problems,omitempty"`
}

// salvaged is one key's newest readable version.
type salvaged struct {
	version   uint64
	deleted   bool
	value     []byte
	expiresAt uint64
}

// Salvage recovers what is readable of the spool in cfg.Dir into a fresh
// spool in the same place. The unreadable spool is first moved aside, whole,
// to <dir>.unreadable-<time>, and only a copy of it is read, so nothing of
// it is ever changed or deleted; a failed salvage leaves it there and the
// fresh spool empty. Messages keep their GUIDs, so a destination that had
// taken one before the cut and gets it again sees the same GUID. No daemon
// may be running (Salvage takes the spool's lock).
func Salvage(cfg Config, o Options) (SalvageReport, error) {
	var rep SalvageReport
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return rep, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	key, err := readKey(cfg.EncryptionKeyFile)
	if err != nil {
		return rep, err
	}
	dir := filepath.Clean(cfg.Dir)
	lock, err := lockSpool(dir, 0, o.Log)
	if err != nil {
		return rep, fmt.Errorf("salvage: %w (stop the daemon first: systemctl stop hl7edge)", err)
	}
	defer lock.Close()
	stamp := time.Now().UTC().Format("20060102T150405Z")
	rep.MovedTo = dir + ".unreadable-" + stamp
	if err := os.Rename(dir, rep.MovedTo); err != nil {
		return rep, fmt.Errorf("salvage: move %s aside: %w", dir, err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return rep, err
	}
	work, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".salvage-work-")
	if err != nil {
		return rep, fmt.Errorf("salvage: %w (it needs as much free space as the spool takes)", err)
	}
	// The work directory holds our copies only.
	defer os.RemoveAll(work)
	kv, method, problems, err := readAll(rep.MovedTo, work, cfg, key, o)
	rep.Method, rep.Problems = method, problems
	if err != nil {
		return rep, err
	}
	if rep.LogRecords, err = salvageCommitLog(rep.MovedTo, work, key, kv); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
	}
	if len(kv) == 0 {
		return rep, fmt.Errorf("salvage: nothing readable in %s: %s", rep.MovedTo, strings.Join(rep.Problems, "; "))
	}
	if err := rebuild(cfg, o, kv, &rep); err != nil {
		return rep, err
	}
	return rep, nil
}

// readAll reads every key of the spool in from, working on copies in work.
func readAll(from, work string, cfg Config, key []byte, o Options) (map[string]salvaged, string, []string, error) {
	var problems []string
	// First: Badger itself, on a copy, with checksums off.
	c1 := filepath.Join(work, "badger")
	if err := copyDir(from, c1); err != nil {
		return nil, "", nil, fmt.Errorf("salvage: copy %s: %w", from, err)
	}
	_ = os.Remove(filepath.Join(c1, lockFile))
	// A table whose end is cut would make Badger's open panic where
	// nothing can recover it (checkTableFooters): such a copy is read in
	// pieces instead.
	if err := checkTableFooters(c1); err != nil {
		problems = append(problems, fmt.Sprintf("badger not tried: %v", err))
	} else if kv, err := readWithBadger(c1, cfg, key, o, false); err == nil {
		return kv, "badger", nil, nil
	} else {
		problems = append(problems, fmt.Sprintf("badger could not open a copy: %v", err))
	}
	// Then the pieces: every table file, and the memtable logs replayed by
	// Badger in a directory of their own (no MANIFEST, no tables).
	kv := map[string]salvaged{}
	tables, _ := filepath.Glob(filepath.Join(c1, "*.sst"))
	slices.Sort(tables)
	for _, t := range tables {
		if key != nil {
			problems = append(problems, "the spool is encrypted: tables are read through Badger only")
			break
		}
		if err := readTable(t, c1, kv); err != nil {
			problems = append(problems, fmt.Sprintf("table %s: %v", filepath.Base(t), err))
		}
	}
	c2 := filepath.Join(work, "logs")
	if err := os.MkdirAll(c2, 0o700); err != nil {
		return nil, "", problems, err
	}
	logs, _ := filepath.Glob(filepath.Join(c1, "*"+walExt))
	// The value logs go with them: Badger resolves the logs' pointers to
	// messages over 256 KiB there.
	vlogs, _ := filepath.Glob(filepath.Join(c1, "*"+vlogExt))
	for _, l := range append(append(logs, vlogs...), filepath.Join(c1, "KEYREGISTRY")) {
		if err := copyFile(l, filepath.Join(c2, filepath.Base(l))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			problems = append(problems, fmt.Sprintf("copy %s: %v", filepath.Base(l), err))
		}
	}
	if len(logs) > 0 {
		lkv, err := readWithBadger(c2, cfg, key, o, true)
		if err != nil {
			problems = append(problems, fmt.Sprintf("memtable logs: %v", err))
		}
		for k, v := range lkv {
			merge(kv, k, v)
		}
	}
	// Nothing readable here may still leave the commit log (Salvage).
	return kv, "tables+logs", problems, nil
}

func merge(kv map[string]salvaged, k string, v salvaged) {
	if old, ok := kv[k]; !ok || v.version >= old.version {
		kv[k] = v
	}
}

// readWithBadger opens dir with Badger (checksums off) and reads every key's
// newest version; with versions set, tombstones are kept so they can be
// merged with what the tables hold.
func readWithBadger(dir string, cfg Config, key []byte, o Options, versions bool) (map[string]salvaged, error) {
	c := cfg
	c.Dir = dir
	bo := badgerOptions(c, key, o.Log).WithChecksumVerificationMode(options.NoVerification).WithNumCompactors(0)
	db, err := badger.Open(bo)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	kv := map[string]salvaged{}
	err = db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{AllVersions: versions})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k := string(item.KeyCopy(nil))
			if _, seen := kv[k]; seen {
				continue // AllVersions: newest first
			}
			if item.IsDeletedOrExpired() {
				kv[k] = salvaged{version: item.Version(), deleted: true}
				continue
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				continue
			}
			kv[k] = salvaged{version: item.Version(), value: v, expiresAt: item.ExpiresAt()}
		}
		return nil
	})
	return kv, err
}

// Badger's entry meta bits (value.go); the table package hands them out raw.
const (
	metaDelete       = 1 << 0
	metaValuePointer = 1 << 1
)

// readTable reads one table file on its own; values in the value log are
// read from the value-log files in dir.
func readTable(path, dir string, kv map[string]salvaged) (err error) {
	defer func() {
		if r := recover(); r != nil { // a torn table can make the reader index out of range
			err = fmt.Errorf("unreadable: %v", r)
		}
	}()
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil && !errors.Is(err, z.NewFile) {
		return err
	}
	t, err := table.OpenTable(mf, table.Options{ChkMode: options.NoVerification, BlockSize: tableBlockSize, Compression: options.Snappy})
	if err != nil {
		return err
	}
	// Close the mapping, never DecrRef: that deletes the file.
	defer t.MmapFile.Close(-1)
	it := t.NewIterator(0)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		full := it.Key()
		k, ver := string(y.ParseKey(full)), y.ParseTs(full)
		vs := it.ValueCopy()
		switch {
		case vs.Meta&metaDelete != 0:
			merge(kv, k, salvaged{version: ver, deleted: true})
		case vs.Meta&metaValuePointer != 0:
			// The value is in the value log (messages over 256 KiB). One
			// that cannot be read counts as absent, as a torn block does.
			v, err := readValuePointer(dir, vs.Value)
			if err != nil {
				continue
			}
			merge(kv, k, salvaged{version: ver, value: v, expiresAt: vs.ExpiresAt})
		default:
			merge(kv, k, salvaged{version: ver, value: vs.Value, expiresAt: vs.ExpiresAt})
		}
	}
	return nil
}

// salvagedSpool is what was read, sorted by family.
type salvagedSpool struct {
	msgs    map[uint64]*record  // by seq
	owed    map[uint64][]string // seq -> destinations still owed it
	deads   []salvagedDead
	undeliv []*record
	remotes []*badger.Entry
	traces  map[string][]byte // trace keys (headers, control-ID index, events) as they were
}

type salvagedDead struct {
	dest string
	rec  *record
	key  []byte
}

// rebuild writes what was read into a fresh spool in cfg.Dir.
func rebuild(cfg Config, o Options, kv map[string]salvaged, rep *SalvageReport) error {
	got := sortSalvaged(kv, rep)
	sp, err := Open(cfg, Options{Log: o.Log, Destinations: o.Destinations})
	if err != nil {
		return fmt.Errorf("salvage: open a fresh spool in %s: %w", cfg.Dir, err)
	}
	// Dead letters keep their old numbers, so they go first and the
	// re-queued messages are numbered above them.
	if err := restoreDeadAndRemote(sp, got, rep); err != nil {
		_ = sp.Close()
		return fmt.Errorf("salvage: write dead letters and remote IDs: %w", err)
	}
	err = requeueSalvaged(sp, got, rep)
	if err == nil {
		err = restoreTraces(sp, got, rep)
	}
	if cerr := sp.Close(); err == nil {
		err = cerr
	}
	return err
}

// sortSalvaged keeps the live, unexpired keys of kv by family, noting the
// records that cannot be read.
func sortSalvaged(kv map[string]salvaged, rep *SalvageReport) *salvagedSpool {
	now := uint64(time.Now().Unix())
	got := &salvagedSpool{msgs: map[uint64]*record{}, owed: map[uint64][]string{}, traces: map[string][]byte{}}
	for k, v := range kv {
		if v.deleted || len(k) == 0 || v.expiresAt != 0 && v.expiresAt <= now {
			continue
		}
		kb := []byte(k)
		switch kb[0] {
		case famMessage:
			if len(kb) != 17 {
				continue
			}
			r, err := decodeRecord(v.value)
			if err != nil {
				rep.Problems = append(rep.Problems, fmt.Sprintf("message seq %d: %v", seqOf(kb), err))
				continue
			}
			got.msgs[seqOf(kb)] = r
		case famQueue:
			if dest, ok := nameOf(kb); ok {
				got.owed[seqOf(kb)] = append(got.owed[seqOf(kb)], dest)
			}
			got.queuedTrace(kb, v.value, func(k []byte) (bool, error) { q, ok := kv[string(k)]; return ok && !q.deleted, nil })
		case famDead:
			dest, ok := nameOf(kb)
			r, err := decodeRecord(v.value)
			if !ok || err != nil {
				rep.Problems = append(rep.Problems, fmt.Sprintf("dead letter %x: unreadable", kb))
				continue
			}
			got.deads = append(got.deads, salvagedDead{dest, r, kb})
		case famUndeliv:
			if r, err := decodeRecord(v.value); err == nil {
				got.undeliv = append(got.undeliv, r)
			}
		case famTrace, famTraceV1, famTraceCtl, famEvent:
			got.traces[k] = v.value // a stored header wins over a queue entry's (queuedTrace)
		case famRemote:
			e := badger.NewEntry(kb, v.value)
			if v.expiresAt != 0 {
				e = e.WithTTL(time.Duration(v.expiresAt-now) * time.Second)
			}
			got.remotes = append(got.remotes, e)
		}
	}
	return got
}

// requeueSalvaged appends, in their old order and under their GUIDs, the
// messages still owed to someone, and the undeliverable ones.
func requeueSalvaged(sp *Spool, got *salvagedSpool, rep *SalvageReport) error {
	ctx := context.Background()
	seqs := make([]uint64, 0, len(got.msgs))
	for s := range got.msgs {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	for _, s := range seqs {
		r := got.msgs[s]
		dests := got.owed[s]
		delete(got.owed, s)
		if len(dests) == 0 {
			rep.Delivered++
			continue
		}
		slices.Sort(dests)
		if _, err := sp.Append(ctx, Entry{Source: r.Source, Raw: r.Raw, Dests: slices.Compact(dests), GUID: r.GUID}); err != nil {
			return fmt.Errorf("salvage: re-queue message seq %d: %w", s, err)
		}
		rep.Queued++
	}
	for s, dests := range got.owed {
		rep.QueuedNoRecord++
		rep.Problems = append(rep.Problems, fmt.Sprintf("message seq %d owed to %v: its content is unreadable", s, dests))
	}
	for _, r := range got.undeliv {
		if _, err := sp.Append(ctx, Entry{Source: r.Source, Raw: r.Raw, GUID: r.GUID}); err == nil {
			rep.Undeliverable++
		}
	}
	return nil
}

// restoreDeadAndRemote writes the dead letters and remembered remote IDs
// back as they were, syncs, and numbers what comes next above the dead
// letters.
func restoreDeadAndRemote(sp *Spool, got *salvagedSpool, rep *SalvageReport) error {
	wb := sp.newBatch()
	defer wb.Cancel()
	var top uint64
	for _, d := range got.deads {
		if err := wb.Set(d.key, d.rec.encode()); err != nil {
			return err
		}
		top = max(top, seqOf(d.key))
	}
	for _, e := range got.remotes {
		if err := wb.SetEntry(e); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	if err := sp.syncLogs(true); err != nil {
		return err
	}
	rep.Dead, rep.RemoteIDs = len(got.deads), len(got.remotes)
	sp.mu.Lock()
	sp.lastSeq = max(sp.lastSeq, top)
	sp.durableSeq = sp.lastSeq
	sp.mu.Unlock()
	return nil
}

func copyDir(from, to string) error {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		if err := copyFile(filepath.Join(from, e.Name()), filepath.Join(to, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
