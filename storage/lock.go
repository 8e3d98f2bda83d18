package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
// contended between hl7edge processes.
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
	deadline := time.Now().Add(wait)
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			if logged {
				log.Info("spool lock acquired", "dir", dir)
			}
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("spool lock %s: %w", p, err)
		}
		if !time.Now().Before(deadline) {
			_ = f.Close()
			return nil, fmt.Errorf("%w: %s (waited %s; only one process may open a spool: stop the other one, or reach a running daemon through its admin socket)", ErrInUse, dir, wait)
		}
		if !logged {
			log.Warn("spool is in use by another process (an operator's `hl7edge spool` command?); waiting for it", "dir", dir, "wait", wait.String())
			logged = true
		}
		time.Sleep(lockPoll)
	}
}
