package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrInUse means another process holds the spool open: the daemon, or an
// operator's `hl7edge spool` command looking at it offline.
var ErrInUse = errors.New("spool is in use by another process")

// lockFile is the spool's own lock. Badger refuses to open a directory that
// another process holds (its flock on the directory) and gives up at once, so
// an operator's `hl7edge spool stats` that opened the spool while the daemon
// was starting made the daemon exit. Taking this lock first, with a bounded
// wait, turns that race into a short pause; Badger's lock is then never
// contended between hl7edge processes. The holder writes its process id
// into the file, so that a process waiting for it can say who it waits for.
const lockFile = "hl7edge.lock"

// lockPoll is how often a waiting Open tries the lock again.
const lockPoll = 50 * time.Millisecond

// lockSpool takes the exclusive lock on dir, trying for up to wait (once when
// wait is 0). The caller releases it by closing the file.
func lockSpool(dir string, wait time.Duration, log *slog.Logger) (*os.File, error) {
	p := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool lock %s: %w (spool.dir must be writable by the hl7edge user)", p, err)
	}
	if err := waitFlock(context.Background(), f, dir, wait, log); err != nil {
		_ = f.Close()
		return nil, err
	}
	// Best effort: the lock holds without the note.
	if f.Truncate(0) == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// WaitForLock waits until no other process holds dir's spool lock, for up
// to wait or until ctx ends (the daemon's SIGTERM), without keeping it; a
// spool that does not exist yet is free. The caller opens the spool next,
// with a short wait of its own for a process that slips in between.
func WaitForLock(ctx context.Context, dir string, wait time.Duration, log *slog.Logger) error {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("spool lock %s: %w (spool.dir must be writable by the hl7edge user)", filepath.Join(dir, lockFile), err)
	}
	defer f.Close() // closing the file releases the lock
	return waitFlock(ctx, f, dir, wait, log)
}

// waitFlock takes the flock on f, trying for up to wait (once when wait is
// 0) or until ctx ends.
func waitFlock(ctx context.Context, f *os.File, dir string, wait time.Duration, log *slog.Logger) error {
	deadline := time.Now().Add(wait)
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			if logged {
				log.Info("spool lock acquired", "dir", dir)
			}
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("spool lock %s: %w", f.Name(), err)
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w: %s, held by %s (waited %s; only one process may open a spool: stop the other one, or reach a running daemon through its admin socket)", ErrInUse, dir, lockHolder(f), wait)
		}
		if !logged {
			log.Warn("spool is in use by another process, "+lockHolder(f)+"; waiting for it", "dir", dir, "wait", wait.String())
			logged = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped waiting for spool %s, held by %s: %w", dir, lockHolder(f), ctx.Err())
		case <-time.After(lockPoll):
		}
	}
}

// lockHolder names the process whose id the lock file holds, in the words
// an operator needs: another daemon on the same spool is a configuration
// mistake, an operator's spool command goes away by itself.
func lockHolder(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 0 {
		return "a process that left no note (an hl7edge older than this one?)"
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return fmt.Sprintf("process %d", pid)
	}
	args := strings.Fields(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	switch {
	case len(args) > 1 && args[1] == "run":
		return fmt.Sprintf("another hl7edge daemon (pid %d, %s): two daemons must not share a spool; stop that one, or give this one its own spool.dir", pid, strings.Join(args, " "))
	case len(args) > 1 && args[1] == "spool":
		return fmt.Sprintf("an operator's `hl7edge spool` command (pid %d), which lets go when it is done", pid)
	}
	return fmt.Sprintf("process %d (%s)", pid, strings.Join(args, " "))
}
