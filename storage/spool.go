// Package storage is the durable spool: every accepted message is written
// once to Badger, fsynced in a group with its concurrent neighbours before
// anyone is told it is safe, and then handed to each destination in arrival
// order through a per-destination FIFO index. Delivered data leaves the disk
// a segment at a time.
package storage

import (
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"
	"github.com/hl7edge/hl7edge/storage/commitlog"
	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// Errors callers act on.
var (
	ErrFull   = errors.New("spool is full")
	ErrClosed = errors.New("spool is closed")
	// ErrUnreadable: Badger could not open the spool, or its keys could not
	// be read (after a power cut, a failing SD card). The files are left as
	// they are; Salvage copies what is readable into a fresh spool.
	ErrUnreadable = errors.New("spool is unreadable")
)

// Entry is one message to append.
type Entry struct {
	Source   string
	Raw      []byte
	Dests    []string // empty: the message goes to the undeliverable store
	RemoteID string   // optional: remembered with the message so it is never stored twice
	GUID     uuid.UUID
	// What the trace keeps besides names and times: MSH-10, MSH-9 and the
	// sender's address. Never any other field.
	ControlID string
	Type      string
	Peer      string
	// ReplayOf names the message this one is a replay of (Replay).
	ReplayOf uuid.UUID
	deadKey  []byte // set when re-queueing a dead letter: removed in the same commit
	attempts int
	// rerouted is set when an undeliverable message is routed again: its
	// trace header is a key already, rewritten at this commit (traceEntries).
	rerouted bool
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
	// first and last are the UnixNano receive times of its oldest and
	// newest message: retention keeps a delivered segment until last is
	// older than spool.retain.
	first, last int64
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
	// Gate is shared with the gateway's other writers on the spool's file
	// system (a file destination): a sync that fails for any of them fails
	// the spool's next one too (syncgate says why). nil: the spool's own.
	Gate *syncgate.Gate
}

// Spool is the Badger-backed message store.
type Spool struct {
	cfg  Config
	db   *badger.DB
	mem  logSyncer // memtable logs, synced at checkpoints
	vlog logSyncer // value logs
	// clog is the commit log every write goes through (oplog.go); writeMu
	// keeps its order Badger's.
	clog    *commitlog.Log
	writeMu sync.Mutex
	packBuf []byte // packOps's, under writeMu
	// logSyncHook replaces the commit log's sync (tests); nil in use.
	logSyncHook func(*os.File) error
	// dirSyncHook replaces the sync of the spool's directory after its
	// SYNC-FAILED mark is made or removed (tests); nil in use.
	dirSyncHook func(*os.File) error
	// reopenHook runs while a faulted spool is closed, before it is opened
	// again (tests: what the card lost shows then); nil in use.
	reopenHook func()
	// holdVlogClean keeps the clean-up loop from cleaning the value log
	// after drops (tests that run the clean-up themselves); false in use.
	holdVlogClean atomic.Bool
	replayed      int // records the last open replayed
	// The commit loop's checkpoint state (checkpoint.go): segments from
	// ckFrom on are not yet known durable in Badger; ckMem is the newest
	// memtable log each finished segment's records may be in.
	ckAt        time.Time
	ckFrom      uint64
	ckSeen      uint64
	ckMem       map[uint64]int
	checkpoints int
	lock        *os.File // held from before Badger opens until after it closes
	log         *slog.Logger
	now         func() time.Time
	reqs        chan *appendReq
	// intake counts Appends waiting for their commit (IntakeBusy).
	intake appendGauge

	// dbMu is held shared by every use of db, and exclusively while
	// DropPrefix runs (Badger refuses every write during a drop,
	// ErrBlockedWrites, instead of waiting) and while a faulted spool is
	// closed and re-opened (db is nil in between).
	dbMu sync.RWMutex
	// syncMu orders the syncers' use: the commit loop, Kill, value-log
	// clean-up and purges all make writes durable.
	syncMu sync.Mutex
	// gate runs every sync; goodEpoch is its epoch when the spool was last
	// (re-)opened from disk: a sync failed since then on the file system
	// may have cost writes of the spool's that no sync of its own saw fail.
	gate      *syncgate.Gate
	goodEpoch uint64
	// damaged: a re-open found a table damaged (damage.go); the spool
	// stays faulted without trying again, until it is salvaged. Under mu.
	damaged bool
	bopts   badger.Options // to re-open with
	key     []byte         // the encryption key, or nil

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
	atStart       map[string]int64 // queued when the spool was opened
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
	// durableSeq is the highest sequence number whose group commit was
	// synced: Next hands out nothing above it.
	durableSeq uint64
	// fault is the first failed sync since the spool was last (re-)opened;
	// while it is set, no Append is answered as stored (durable.go).
	fault   error
	inDoubt []inDoubt
	reopens uint64

	// traceBytes estimates what the trace records take (trace_max_bytes);
	// saved now and then, counted up on write and down on prune.
	traceBytes     int64
	traceBytesSave int64
	eventSeq       atomic.Uint32
	lazy           *lazyTrace
}
