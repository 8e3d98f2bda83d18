package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
)

// crashConfig makes segments tiny and keeps few delivered ones for replay
// (retain_max_bytes) so that clean-up (DropPrefix) runs all the time, on
// retention's path, and SIGKILLs land in the middle of it.
const crashConfig = `device: {id: crash-gw, board: sim}
spool: {dir: %[1]s/spool, max_bytes: 512MiB, segment_messages: 32, retain_max_bytes: 64KiB}
admin: {socket: %[1]s/admin.sock}
log: {level: debug}
sources:
  - {name: mllp-in, type: mllp, listen: "127.0.0.1:%[2]d", max_connections: 16}
destinations:
  - {name: archive, type: file, dir: %[1]s/archive}
`

// TestCrashSafety SIGKILLs the real daemon at random moments while several
// connections send, restarts it, and proves that every control ID that was
// ACKed AA is delivered, none is delivered under two GUIDs, and no
// interrupted write (.tmp-*) is left in the file destination. CRASH_KILLS
// sets the number of kills (make crash-campaign KILLS=1000); the default is
// 24, 6 with -short.
func TestCrashSafety(t *testing.T) {
	if raceEnabled {
		t.Skip("runs the real binary for a minute; make test runs it without -race")
	}
	dir := t.TempDir()
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfgPath := filepath.Join(dir, "hl7edge.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, crashConfig, dir, port), 0o600); err != nil {
		t.Fatal(err)
	}
	rounds := 24
	if testing.Short() {
		rounds = 6
	}
	if n, err := strconv.Atoi(os.Getenv("CRASH_KILLS")); err == nil && n > 0 {
		rounds = n
	}
	// CRASH_PACE spaces each sender's messages. Unpaced, four senders store
	// faster than the file destination (an fsync per file and per
	// directory) delivers, and a 1,000-kill campaign leaves a backlog of
	// hundreds of thousands of messages to drain.
	pace, _ := time.ParseDuration(os.Getenv("CRASH_PACE"))
	began := time.Now()
	var mu sync.Mutex
	acked := map[string]bool{}
	sent := 0
	killsInDrop := 0
	for r := range rounds {
		d := startDaemon(t, cfgPath, filepath.Join(dir, "admin.sock"), addr)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for c := range 4 {
			wg.Go(func() {
				cl, err := mllp.Dial(ctx, addr, nil)
				if err != nil {
					return
				}
				defer cl.Close()
				for n := 0; ctx.Err() == nil; n++ {
					id := fmt.Sprintf("R%02dC%dN%05d", r, c, n)
					mu.Lock()
					sent++
					mu.Unlock()
					ack, err := cl.Send(ctx, fmt.Appendf(nil, "MSH|^~\\&|CRASH|TEST|GW|HOSP|20261122||ORU^R01|%s|P|2.5.1\rOBX|1|NM|GLU||%d\r", id, n))
					if err != nil {
						return
					}
					if code, acked2, _, err := hl7.ParseACK(ack); err == nil && code == "AA" && acked2 == id {
						mu.Lock()
						acked[id] = true
						mu.Unlock()
					}
					if pace > 0 {
						select {
						case <-ctx.Done():
						case <-time.After(pace):
						}
					}
				}
			})
		}
		// Every third round kills as soon as a clean-up starts; the others
		// at a random moment.
		if r%3 == 0 {
			timeout := time.After(5 * time.Second)
		wait:
			for {
				select {
				case line := <-d.watch:
					if strings.Contains(line, "spool dropping delivered segments") {
						d.kill()
						killsInDrop++
						break wait
					}
				case <-timeout:
					d.kill()
					break wait
				}
			}
		} else {
			time.Sleep(time.Duration(200+rand.IntN(1000)) * time.Millisecond)
			d.kill()
		}
		cancel()
		wg.Wait()
	}

	// Restart and let everything drain: a long campaign leaves a backlog.
	d := startDaemon(t, cfgPath, filepath.Join(dir, "admin.sock"), addr)
	// It fails only when the queue stops shrinking for 90 s.
	const stuckFor = 90 * time.Second
	least, since := int64(-1), time.Now()
	for {
		q := d.stats().Destinations["archive"].Queued
		if q == 0 {
			break
		}
		if least < 0 || q < least {
			least, since = q, time.Now()
		}
		if time.Since(since) > stuckFor {
			t.Fatalf("archive still has %d queued and has not shrunk for %s", q, stuckFor)
		}
		time.Sleep(200 * time.Millisecond)
	}
	d.stop()

	guidsOf := readArchive(t, filepath.Join(dir, "archive"))
	if tmp, _ := filepath.Glob(filepath.Join(dir, "archive", ".tmp-*")); len(tmp) > 0 {
		t.Errorf("%d interrupted writes (.tmp-*) left in the file destination after the restart", len(tmp))
	}
	lost := 0
	for id := range acked {
		if len(guidsOf[id]) == 0 {
			lost++
			if lost < 10 {
				t.Errorf("control ID %s was ACKed AA but never delivered", id)
			}
		}
	}
	dups := 0
	for id, gs := range guidsOf {
		if len(gs) > 1 {
			dups++
			t.Errorf("control ID %s delivered under %d GUIDs: %v", id, len(gs), gs)
		}
	}
	t.Logf("%d kills (%d during segment clean-up) in %s, %d sent, %d ACKed AA, %d delivered, %d lost, %d under two GUIDs",
		rounds, killsInDrop, time.Since(began).Round(time.Second), sent, len(acked), len(guidsOf), lost, dups)
	if len(acked) < rounds*10 {
		t.Fatalf("only %d messages were ACKed across %d rounds: the test did not exercise the daemon", len(acked), rounds)
	}
	if killsInDrop == 0 {
		t.Fatal("no SIGKILL landed during segment clean-up")
	}
}
