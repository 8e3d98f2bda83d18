// Package fileout is the `file` destination: one <GUID>.hl7 per message,
// written atomically, for debugging, tests and simple integrations that
// watch a directory.
package fileout

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/storage/syncgate"
	"golang.org/x/sys/unix"
)

// Config is a `type: file` destination.
type Config struct {
	Dir string `yaml:"dir"`
}

// Validate checks the block.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return fmt.Errorf("dir is empty: set it to the directory that receives one <GUID>.hl7 file per message")
	}
	return nil
}

// Output writes messages as files.
type Output struct {
	dir string
	// gate is dir's file system's, shared with every other writer there
	// (the spool, other file destinations): a failed flush of any of them
	// drops this destination's unsynced files too, and only the gate tells
	// Deliver so (syncgate). nil: none.
	gate *syncgate.Gate
	// written runs between the writes and their sync (tests: a failure
	// elsewhere lands there); nil in use.
	written func()
}

var _ flow.BatchOutput = (*Output)(nil)

// tmpPattern names the temporary files Deliver writes before the rename.
const tmpPattern = ".tmp-*"

// New makes the directory if needed and removes the temporary files a crash
// or power cut left between write and rename. They hold message content
// (patient data) that no reader will ever pick up, and their messages are
// still queued in the spool, so they are delivered again in full. gates
// hands out dir's file system's gate (nil: none).
func New(c Config, gates *syncgate.Gates) (*Output, error) {
	_, statErr := os.Stat(c.Dir)
	if err := os.MkdirAll(c.Dir, 0o700); err != nil { // messages: this user only (files are 0600)
		return nil, fmt.Errorf("file destination directory %s: %w", c.Dir, err)
	}
	// A directory made now is durable only once its parent is synced;
	// without that a cut could take it, and every file delivered into it,
	// while the spool already counts them delivered.
	if os.IsNotExist(statErr) {
		parent := filepath.Dir(filepath.Clean(c.Dir))
		pg, err := gates.For(parent) // the parent may be on another file system
		if err != nil {
			return nil, fmt.Errorf("file destination directory %s: %w", c.Dir, err)
		}
		if err := gatedSyncDir(pg, parent); err != nil {
			return nil, err
		}
	}
	gate, err := gates.For(c.Dir)
	if err != nil {
		return nil, fmt.Errorf("file destination directory %s: %w", c.Dir, err)
	}
	if err := removeLeftovers(c.Dir, gate); err != nil {
		return nil, err
	}
	return &Output{dir: c.Dir, gate: gate}, nil
}

// gatedSyncDir syncs dir through gate, as every flush on the card is: not
// beside another writer's, and a failure told to them all.
func gatedSyncDir(gate *syncgate.Gate, dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("file destination: %w", err)
	}
	defer d.Close()
	return gate.Sync(gate.Epoch(), func() error { return flushDir(dir, d) })
}

// removeLeftovers deletes the .tmp-* files in dir and syncs the directory,
// through gate, so their removal is durable too.
func removeLeftovers(dir string, gate *syncgate.Gate) error {
	left, err := filepath.Glob(filepath.Join(dir, tmpPattern))
	if err != nil {
		return fmt.Errorf("file destination %s: %w", dir, err)
	}
	if len(left) == 0 {
		return nil
	}
	for _, p := range left {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("file destination: remove interrupted write %s: %w (remove it by hand; it holds message content)", p, err)
		}
	}
	return gatedSyncDir(gate, dir)
}

// Deliver writes <GUID>.hl7 through a temporary file, fsync and rename, so a
// reader never sees half a message and a redelivery simply rewrites the same
// file with the same bytes.
func (o *Output) Deliver(_ context.Context, m *flow.Message) error {
	since := o.gate.Epoch()
	final := filepath.Join(o.dir, m.GUID+".hl7")
	f, err := os.CreateTemp(o.dir, tmpPattern)
	if err != nil {
		return fmt.Errorf("file destination %s: %w (check the directory exists and is writable)", o.dir, err)
	}
	tmp := f.Name()
	_, werr := f.Write(m.Raw)
	if werr == nil {
		o.hook()
		werr = o.gated(since, f.Sync)
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, final)
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("file destination: write %s: %w", final, werr)
	}
	return o.syncDir(since)
}

func (o *Output) hook() {
	if o.written != nil {
		o.written()
	}
}

// syncDir makes the directory's new names durable; since is the epoch
// the delivery's first write began in.
func (o *Output) syncDir(since uint64) error {
	return o.sync(since, func(d *os.File) error { return flushDir(o.dir, d) })
}

// sync opens the directory and runs flush on it through the gate; a
// failure elsewhere since the delivery began fails it (the worker writes
// the messages again). Only the flush runs inside: an error before it
// (the directory cannot be opened) reached no disk, and in the gate it
// would fail the spool's next sync too, on every retry.
func (o *Output) sync(since uint64, flush func(d *os.File) error) error {
	d, err := os.Open(o.dir)
	if err != nil {
		return fmt.Errorf("file destination: %w", err)
	}
	defer d.Close()
	err = o.gated(since, func() error { return flush(d) })
	if errors.Is(err, syncgate.ErrFailedSince) {
		return fmt.Errorf("file destination %s: %w", o.dir, err)
	}
	return err // flush names the destination
}

// gated runs flush through the gate. A failure elsewhere that refused it
// is no attempt of this destination's (flow.ErrNotAttempted): the worker
// writes the messages again without counting it against max_attempts.
func (o *Output) gated(since uint64, flush func() error) error {
	err := o.gate.Sync(since, flush)
	if errors.Is(err, syncgate.ErrFailedSince) {
		return fmt.Errorf("%w: %w (the messages are written again)", flow.ErrNotAttempted, err)
	}
	return err
}

// DeliverBatch writes each message as Deliver does, with two disk flushes
// for the whole batch instead of two per message: every temporary file is
// written, then one syncfs makes all of their contents durable, then each
// is renamed and one sync of the directory makes the names durable. A
// reader still never sees half a message (a name only ever points at
// contents already on disk), and the batch is reported delivered only once
// every file is durable under its final name.
func (o *Output) DeliverBatch(ctx context.Context, ms []*flow.Message) error {
	since := o.gate.Epoch()
	tmps := make([]string, 0, len(ms))
	defer func() {
		for _, t := range tmps {
			_ = os.Remove(t) // those not renamed: the batch failed part way
		}
	}()
	for _, m := range ms {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := os.CreateTemp(o.dir, tmpPattern)
		if err != nil {
			return fmt.Errorf("file destination %s: %w (check the directory exists and is writable)", o.dir, err)
		}
		tmps = append(tmps, f.Name())
		_, werr := f.Write(m.Raw)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("file destination: write %s: %w", filepath.Join(o.dir, m.GUID+".hl7"), werr)
		}
	}
	o.hook()
	if err := o.sync(since, func(d *os.File) error { return syncFS(o.dir, d) }); err != nil {
		return err
	}
	for i, m := range ms {
		final := filepath.Join(o.dir, m.GUID+".hl7")
		if err := os.Rename(tmps[i], final); err != nil {
			return fmt.Errorf("file destination: write %s: %w", final, err)
		}
		tmps[i] = ""
	}
	tmps = tmps[:0]
	return o.syncDir(since)
}

// syncFS makes everything written to the file system that holds dir (d,
// open) durable, with one journal commit and one disk cache flush
// (syncfs(2)).
func syncFS(dir string, d *os.File) error {
	rc, err := d.SyscallConn()
	if err != nil {
		return fmt.Errorf("file destination: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Syncfs(int(fd)) }); err != nil {
		return fmt.Errorf("file destination: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("file destination: sync the file system of %s: %w", dir, serr)
	}
	return nil
}

// flushDir makes the entries of dir (d, open) durable.
func flushDir(dir string, d *os.File) error {
	if err := d.Sync(); err != nil {
		return fmt.Errorf("file destination: sync %s: %w", dir, err)
	}
	return nil
}

// Close implements flow.Output.
func (o *Output) Close() error { return nil }
