package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/hl7edge/hl7edge/storage/commitlog"
)

// salvageCommitLog applies the commit log of the spool in from to what was
// read of its Badger files, as an open would: the log's records are newer
// than anything Badger was sure to hold, and the messages acknowledged
// last may be nowhere else. It reads a copy in work. A log that cannot be
// replayed in full is left out, with the reason: applying part of it could
// bring back what a later record deleted.
func salvageCommitLog(from, work string, key []byte, kv map[string]salvaged) (int, error) {
	src := filepath.Join(from, commitLogDir)
	if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
		return 0, nil // a spool from before the commit log
	}
	dst := filepath.Join(work, commitLogDir)
	if err := copyDir(src, dst); err != nil {
		return 0, fmt.Errorf("copy the commit log: %w", err)
	}
	l, err := commitlog.Open(dst, commitlog.Options{Key: key, Buffered: true})
	if err != nil {
		return 0, fmt.Errorf("commit log: %w", err)
	}
	defer l.Close()
	// Versions above any Badger gave, in the log's order, so merge keeps
	// the log's word.
	version := uint64(math.MaxUint64 / 2)
	pending := map[string]salvaged{}
	var drops [][]byte
	later, err := scanTouches(func(fn func([]byte) error) error { _, err := l.Replay(fn); return err })
	if err != nil {
		return 0, fmt.Errorf("commit log: %w", err)
	}
	i := 0
	n, err := l.Replay(func(rec []byte) error {
		i++
		ops, err := recordOps(rec)
		if err != nil {
			return err
		}
		if !largeKeptIn(kv, pending, ops, i, later) {
			// As at open (replayCommitLog): its group was never answered
			// AA; what it set is not kept, what it deleted stays.
			for _, o := range ops {
				if o.unset() {
					version++
					pending[string(o.key)] = salvaged{version: version, deleted: true}
				}
			}
			return nil
		}
		for _, o := range ops {
			version++
			switch o.kind {
			case opSet, opSetTTL:
				pending[string(o.key)] = salvaged{version: version, value: o.val, expiresAt: o.expiresAt}
			case opDelete:
				pending[string(o.key)] = salvaged{version: version, deleted: true}
			case opDrop:
				for k := range pending {
					if hasAnyPrefix(k, o.prefixes) {
						delete(pending, k)
					}
				}
				drops = append(drops, o.prefixes...)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("commit log: %w", err)
	}
	// A drop in the log removes what Badger held under it, and the log's
	// own later sets come on top.
	for k := range kv {
		if hasAnyPrefix(k, drops) {
			delete(kv, k)
		}
	}
	for k, v := range pending {
		merge(kv, k, v)
	}
	return n, nil
}

// largeKeptIn says whether what was read holds every large value record i
// marks, whole, or a later record changed its key (laterTouches).
func largeKeptIn(kv, pending map[string]salvaged, ops []op, i int, later *laterTouches) bool {
	for _, o := range ops {
		if o.kind != opLarge || later.superseded(i, o.key) {
			continue
		}
		v, ok := pending[string(o.key)]
		if !ok {
			v, ok = kv[string(o.key)]
		}
		if !ok || v.deleted || !o.holds(v.value) {
			return false
		}
	}
	return true
}

func hasAnyPrefix(k string, prefixes [][]byte) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(k, string(p)) {
			return true
		}
	}
	return false
}
