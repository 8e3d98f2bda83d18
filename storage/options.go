package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Config is what the spool needs to know, in plain Go values. The `spool:`
// block of the configuration file (device/config, Spool) reads sizes and
// durations as people write them and hands them over in this form; the
// spool itself knows nothing of the file.
type Config struct {
	Dir               string
	MaxBytes          int64  // past this, intake answers AE
	MinFreeDisk       int64  // keep at least this much of the file system free
	EncryptionKeyFile string // optional AES key of 16, 24 or 32 bytes
	// RememberFor is how long pull sources' remote IDs are remembered.
	RememberFor time.Duration
	// UndeliverableRetention is how long messages that matched no destination are kept.
	UndeliverableRetention time.Duration
	// SegmentMessages is how many messages share one segment (dropped as one).
	SegmentMessages int
	// ValueLogCleanup is how often the value log, where messages of 256 KiB
	// and more live, is cleaned of delivered ones.
	ValueLogCleanup time.Duration
	// Retain keeps delivered messages this long for replay (nil: 72h; 0s:
	// off), within RetainMaxBytes; retained messages are the first to go
	// when space is needed (docs/operations.md, "Where did message X go").
	Retain         *time.Duration
	RetainMaxBytes int64
	// TraceRetain keeps each message's trace this long (nil: 30 days; 0s:
	// off), within TraceMaxBytes, oldest dropped first.
	TraceRetain   *time.Duration
	TraceMaxBytes int64
}

// Retention defaults (docs/operations.md says why).
const (
	DefaultRetain      = 72 * time.Hour
	DefaultTraceRetain = 30 * 24 * time.Hour
	DefaultTraceBytes  = 256 << 20
)

func (c *Config) retainFor() time.Duration {
	if c.Retain == nil {
		return DefaultRetain
	}
	return *c.Retain
}

func (c *Config) traceFor() time.Duration {
	if c.TraceRetain == nil {
		return DefaultTraceRetain
	}
	return *c.TraceRetain
}

// SetDefaults fills what a hospital would expect when a key is left out.
func (c *Config) SetDefaults() {
	if c.Dir == "" {
		c.Dir = "/var/lib/hl7edge/spool"
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 2 << 30
	}
	if c.MinFreeDisk == 0 {
		c.MinFreeDisk = 64 << 20
	}
	if c.RememberFor == 0 {
		c.RememberFor = 7 * 24 * time.Hour
	}
	if c.UndeliverableRetention == 0 {
		c.UndeliverableRetention = 30 * 24 * time.Hour
	}
	if c.SegmentMessages == 0 {
		c.SegmentMessages = 2048
	}
	if c.ValueLogCleanup == 0 {
		c.ValueLogCleanup = 10 * time.Minute
	}
	if c.RetainMaxBytes == 0 {
		c.RetainMaxBytes = c.MaxBytes / 2
	}
	if c.TraceMaxBytes == 0 {
		c.TraceMaxBytes = DefaultTraceBytes
	}
}

// Validate checks the block; its messages name the file's keys.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return fmt.Errorf("spool.dir is empty: set it to a directory on persistent storage, e.g. /var/lib/hl7edge/spool")
	}
	if c.MaxBytes < 16<<20 {
		return fmt.Errorf("spool.max_bytes %d MiB is below the 16 MiB minimum: raise it (2GiB suits a 32 GB SD card)", c.MaxBytes>>20)
	}
	if c.SegmentMessages < 16 || c.SegmentMessages > 1<<20 {
		return fmt.Errorf("spool.segment_messages %d is outside 16..1048576", c.SegmentMessages)
	}
	if c.ValueLogCleanup < time.Second {
		return fmt.Errorf("spool.value_log_cleanup %s is below 1s: leave it out for the default of 10m", c.ValueLogCleanup)
	}
	if c.RetainMaxBytes > c.MaxBytes {
		return fmt.Errorf("spool.retain_max_bytes (%d bytes) is above spool.max_bytes (%d bytes): retained messages share max_bytes; lower it or leave it out for half of max_bytes", c.RetainMaxBytes, c.MaxBytes)
	}
	if c.TraceMaxBytes < 1<<20 {
		return fmt.Errorf("spool.trace_max_bytes (%d bytes) is below the 1MiB minimum: raise it or leave it out for the default of 256MiB", c.TraceMaxBytes)
	}
	return nil
}

// ErrPlatform32 is returned when the spool would be opened by a 32-bit build.
var ErrPlatform32 = fmt.Errorf("the spool cannot be opened by a 32-bit build (%d-bit int): "+
	"Badger v4's ristretto allocator computes `int << 32`, which overflows on 32-bit platforms and corrupts stored data; "+
	"install the arm64 (64-bit) build of hl7edge on a 64-bit OS", strconv.IntSize)

// readKey loads the AES key for encryption at rest.
func readKey(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("spool encryption key: %w (spool.encryption_key_file must name a readable file of 16, 24 or 32 bytes)", err)
	}
	// A key written with a trailing newline by an editor is still the same key.
	if t := strings.TrimRight(string(b), "\r\n"); len(t) != len(b) && (len(t) == 16 || len(t) == 24 || len(t) == 32) {
		b = []byte(t)
	}
	switch len(b) {
	case 16, 24, 32:
		return b, nil
	}
	return nil, fmt.Errorf("spool encryption key %s has %d bytes: AES needs exactly 16, 24 or 32 (e.g. head -c 32 /dev/urandom > %s)", path, len(b), path)
}

// largeValue is the size from which a value is only marked in the commit
// log and made durable in Badger's value log instead (oplog.go), so that a
// 4 MiB report is not written to the card twice.
const largeValue = 256 << 10

// vlogThreshold is the size from which Badger keeps a value in its value
// log and only a pointer in the LSM tree. A message's record (a lab result
// is about 1.2 KiB) is written there once; the tables then hold keys and
// pointers, and compactions, which rewrote every queued message at every
// level, move a few dozen bytes a message instead: at 16 connections 48%
// less CPU and 37% fewer bytes written per message (docs/performance.md,
// "Message bodies out of the tables"). The price: a dropped segment's
// space comes back when value-log clean-up rewrites or removes its files,
// not at once. Small values (queue entries, trace headers, marks) stay
// inline.
const vlogThreshold = 512

// MaxStoredMessage is the largest message the spool stores, in HL7 bytes: a
// source's max_message_bytes above it is refused when the configuration is
// loaded, and a longer message is refused by Append (ErrTooLarge).
const MaxStoredMessage = 8 << 20

// recordOverhead bounds what a stored record adds to its message: GUID,
// times and counts, the source's name, the destinations' names (63 bytes
// each at most, so some 900 of them) and a reason of at most maxReason.
// Badger refuses a value larger than a value-log file, with an error that
// quotes the value, so a file holds the largest message with this room.
const recordOverhead = 64 << 10

// ErrTooLarge: a message larger than the spool stores (MaxStoredMessage).
var ErrTooLarge = errors.New("message too large for the spool")

// vlogFileSize is the size of Badger's value-log files. A file's space
// comes back only when every message in it is gone (or the few left are
// copied out), so smaller files keep the disk a steady flow uses closer to
// what it holds; the clean-up runs each time this much has been dropped.
const vlogFileSize = MaxStoredMessage + recordOverhead

// tableBlockSize is the size of the blocks Badger builds its tables from
// (see badgerOptions); a reader of a table file on its own (salvage) names it too.
const tableBlockSize = 16 << 10

// badgerOptions tunes Badger for a 1 GB Raspberry Pi (docs/design.md, The spool on a small board):
// small memtables and caches, message bodies in the value log, and no
// fsync per write because the commit log makes each group durable.
func badgerOptions(c Config, key []byte, log *slog.Logger) badger.Options {
	// One transaction may hold only ~15% of the memtable; a value in the
	// value log counts only by its pointer.
	const mem = 4 << 20
	o := badger.DefaultOptions(c.Dir).
		WithSyncWrites(false).
		WithMemTableSize(mem).
		WithValueThreshold(vlogThreshold).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(6).
		WithBaseTableSize(1 << 20).
		WithBaseLevelSize(8 << 20).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithValueLogFileSize(vlogFileSize).
		WithBlockCacheSize(4 << 20). // never 0 with compression: Badger panics
		// 16 KiB blocks, not Badger's 4: a block holds about a dozen lab
		// results instead of three, so Snappy finds what they share and
		// each block's fixed costs (compression call, checksum, index
		// entry) are paid a quarter as often. At 16 connections: 17% fewer
		// bytes written, 6 to 10% less CPU and less RSS; 32 and 64 KiB
		// saved more but pushed peak RSS to the 64 MiB limit
		// (docs/performance.md, "Table block size").
		WithBlockSize(tableBlockSize).
		WithCompression(options.Snappy).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithLogger(badgerLogger{log})
	// Deeper levels would otherwise use ever larger tables, and every table
	// being built holds twice its size in memory.
	o.TableSizeMultiplier = 1
	if key != nil {
		o = o.WithEncryptionKey(key).WithIndexCacheSize(4 << 20)
	}
	return o
}

// badgerLogger routes Badger's own chatter into slog at sensible levels.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Infof(f string, a ...any) {
	b.l.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Debugf(string, ...any) {}
