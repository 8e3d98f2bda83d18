// Package syncgate lets the box's writers on one file system (the spool,
// file destinations, the device's state files beside the spool) learn of
// each other's failed disk syncs.
//
// When a card fails a cache flush it loses every write it had not yet made
// durable, whoever wrote it, but Linux returns the error only to the sync
// that asked for the flush. A second writer whose data sat in the same cache
// then syncs, the next flush succeeds, and it is told its data is durable
// when the card no longer has it. The spool would count a file destination's
// message delivered though its file is empty, or answer AA for a group whose
// large value never reached the card.
//
// A Gate closes that gap for the writers that share it. Every sync runs
// with the gate held, one at a time, and a failed one moves the gate's
// epoch before the next may start. A writer notes the epoch before its
// first write and hands it to Sync: if a sync failed on the file system
// since, its writes may be gone, and Sync says so instead of syncing.
package syncgate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
)

// ErrFailedSince: a sync on the same file system failed after the caller's
// writes began, so they may not be on the card whatever a sync says now.
// The caller writes them again (a delivery is retried, a spool re-opens).
var ErrFailedSince = errors.New("a disk sync on the same file system failed meanwhile")

// Gate serializes the syncs of the writers on one file system and counts
// those that failed. A nil *Gate serializes nothing and never reports a
// failure: a writer alone on its file system sees its own errors.
type Gate struct {
	mu    sync.Mutex    // held through each sync
	epoch atomic.Uint64 // failed syncs so far; moved with mu held
	err   error         // the last one's error; mu
}

// Gates hands out one Gate per file system: every writer on a file system
// loses its unsynced writes to a failed flush of any other's there, the
// spool's, a state file's or a file destination's on a USB stick alike.
// The gates are the process's: one set shared by all its writers.
type Gates struct {
	mu    sync.Mutex
	byDev map[uint64]*Gate
}

// NewGates makes an empty set of gates.
func NewGates() *Gates { return &Gates{byDev: map[uint64]*Gate{}} }

// For is the gate of the file system that holds dir (or, while dir does
// not exist yet, will hold it), made on the first ask. A nil *Gates hands
// out nil gates: every writer sees only its own errors.
func (gs *Gates) For(dir string) (*Gate, error) {
	if gs == nil {
		return nil, nil
	}
	dev, err := device(dir)
	if err != nil {
		return nil, err
	}
	gs.mu.Lock()
	defer gs.mu.Unlock()
	g := gs.byDev[dev]
	if g == nil {
		g = &Gate{}
		gs.byDev[dev] = g
	}
	return g, nil
}

// Epoch is the number of syncs that failed so far; a writer notes it
// before its first write. It does not wait for a sync under way: if that
// one fails, the writer's own Sync says so.
func (g *Gate) Epoch() uint64 {
	if g == nil {
		return 0
	}
	return g.epoch.Load()
}

// Sync runs sync, which makes durable writes begun in epoch since, alone
// on the file system. It fails, without calling sync, with ErrFailedSince
// when a sync failed after since; a failure of sync itself moves the epoch
// before the next caller's sync may start. So sync should hold the flush
// and little else: whatever error it returns (a directory it could not
// open) fails every writer on the file system.
func (g *Gate) Sync(since uint64, sync func() error) error {
	if g == nil {
		return sync()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.epoch.Load() != since {
		return fmt.Errorf("%w (%v): the card may have lost what was written before it", ErrFailedSince, g.err)
	}
	if err := sync(); err != nil {
		g.err = err
		g.epoch.Add(1)
		return err
	}
	return nil
}

// Failed tells the gate of a flush that failed outside it (the commit log
// seals a full segment and flushes it inside an append): the writers that
// began before it are refused as after a failed Sync. An error the gate
// was told already (a log's sticky error, repeated) moves nothing. It
// takes the gate: never call it from inside a Sync's function.
func (g *Gate) Failed(err error) {
	if g == nil || err == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if errors.Is(err, g.err) {
		return
	}
	g.err = err
	g.epoch.Add(1)
}

// device is the device number of the file system that holds dir or, while
// dir does not exist yet, will hold it (its nearest existing parent's).
func device(dir string) (uint64, error) {
	fi, err := os.Stat(dir)
	for p := filepath.Clean(dir); errors.Is(err, fs.ErrNotExist) && filepath.Dir(p) != p; {
		p = filepath.Dir(p)
		fi, err = os.Stat(p)
	}
	if err != nil {
		return 0, fmt.Errorf("disk sync gate: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("disk sync gate: %s: no device number on this system", dir)
	}
	return st.Dev, nil
}
