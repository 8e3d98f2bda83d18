// Package watchdog tells systemd the daemon is ready, is stopping, and is
// still alive (a Type=notify service with WatchdogSec).
//
// "Alive" means every health.Loop beats, not merely that this goroutine
// runs: a process whose delivery loop is wedged answers nothing useful, so
// when any loop stalls the pings stop and systemd restarts the box's
// service after WatchdogSec. Everything is a no-op outside systemd
// (NOTIFY_SOCKET unset), so the same binary runs from a shell.
//
// The unit needs:
//
//	[Service]
//	Type=notify
//	NotifyAccess=main
//	WatchdogSec=30s
//
// A hung loop is then restarted at most MaxAge (30 s) + WatchdogSec after
// its last beat.
package watchdog

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// Options configure a Watchdog.
type Options struct {
	Log *slog.Logger
	// MaxAge is how long a loop may go without beating before the pings
	// stop; default health.StallAge, the age at which health snapshots list
	// a loop as stalled.
	MaxAge time.Duration
	// Interval between pings; 0 means half of systemd's WatchdogSec (from
	// WATCHDOG_USEC), as sd_watchdog_enabled(3) advises.
	Interval time.Duration
}

// Watchdog speaks the sd_notify protocol.
type Watchdog struct {
	o Options
}

// New makes a watchdog.
func New(o Options) *Watchdog {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MaxAge <= 0 {
		o.MaxAge = health.StallAge
	}
	return &Watchdog{o: o}
}

// Ready tells systemd that startup finished (READY=1): systemctl start
// returns and units ordered after hl7edge start.
func (w *Watchdog) Ready() error { return notify(daemon.SdNotifyReady) }

// Stopping tells systemd a clean stop has begun (STOPPING=1), so the
// watchdog does not fire while queues drain.
func (w *Watchdog) Stopping() error { return notify(daemon.SdNotifyStopping) }

func notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("watchdog: tell systemd %s through NOTIFY_SOCKET %q: %w", state, os.Getenv("NOTIFY_SOCKET"), err)
	}
	return nil
}

// Run pings systemd's watchdog (WATCHDOG=1) until ctx ends, but only while
// reg lists no stalled loop. It returns at once, with nil, when not running
// under systemd or when the unit has no WatchdogSec.
func (w *Watchdog) Run(ctx context.Context, reg *health.Registry) error {
	log := w.o.Log
	if os.Getenv("NOTIFY_SOCKET") == "" {
		log.Debug("not started by systemd (NOTIFY_SOCKET unset): watchdog off")
		return nil
	}
	interval := w.o.Interval
	if interval <= 0 {
		wd, err := daemon.SdWatchdogEnabled(false)
		if err != nil {
			return fmt.Errorf("watchdog: read WatchdogSec from systemd (WATCHDOG_USEC %q): %w", os.Getenv("WATCHDOG_USEC"), err)
		}
		if wd == 0 {
			log.Info("systemd watchdog not enabled for this process (no WatchdogSec in the unit): not pinging")
			return nil
		}
		interval = wd / 2
	}
	log.Info("pinging systemd watchdog while every loop beats", "interval", interval, "max_loop_age", w.o.MaxAge)

	var stalled, failing bool
	send := func(state string) {
		if err := notify(state); err != nil {
			if !failing {
				log.Warn("systemd notification failed; will keep trying", "err", err)
			}
			failing = true
			return
		}
		failing = false
	}
	ping := func() {
		loops := reg.Stalled(w.o.MaxAge)
		switch {
		case len(loops) == 0:
			if stalled {
				stalled = false
				send("STATUS=running")
				log.Info("every loop beats again: watchdog pings resumed")
			}
			send(daemon.SdNotifyWatchdog)
		case !stalled:
			stalled = true
			// Loop names say which part hung; they carry no patient data.
			send("STATUS=stalled: " + strings.Join(loops, ", "))
			log.Error("loops stalled: watchdog pings stopped, systemd will restart hl7edge unless they recover",
				"loops", loops, "max_loop_age", w.o.MaxAge)
		}
	}
	tk := time.NewTicker(interval)
	defer tk.Stop()
	ping()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
			ping()
		}
	}
}
