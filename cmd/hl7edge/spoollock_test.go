package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// TestSpoolCommandsNeverStopTheDaemon: an operator's `hl7edge spool stats`
// (or `dead list`) run in a loop while the daemon starts and stops 100 times
// never makes a start fail. Before the spool had its own lock with a bounded
// wait, a command that found no admin socket yet opened the spool itself and
// the starting daemon exited with Badger's "Cannot acquire directory lock"
// (3 starts out of 5 on a plain host).
func TestSpoolCommandsNeverStopTheDaemon(t *testing.T) {
	cycles := 100
	if testing.Short() {
		cycles = 10
	}
	dir := t.TempDir()
	port := freePort(t)
	cfgPath := filepath.Join(dir, "hl7edge.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, spoolCLIConfig, dir, port), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// Runs before TempDir's clean-up, also when a start fails the test.
	t.Cleanup(func() { cancel(); wg.Wait() })
	var mu sync.Mutex
	looks, failed := 0, []string{}
	commands := [][]string{
		{"spool", "stats", "--config", cfgPath, "--json"},
		{"spool", "dead", "list", "--config", cfgPath, "--destination", "lis"},
	}
	for i := range 2 {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				out, err := exec.Command(binPath, commands[(i+n)%2]...).CombinedOutput()
				mu.Lock()
				looks++
				if err != nil && ctx.Err() == nil {
					failed = append(failed, fmt.Sprintf("%v: %s", err, out))
				}
				mu.Unlock()
			}
		})
	}
	for range cycles {
		d := startDaemon(t, cfgPath, filepath.Join(dir, "admin.sock"), addr)
		d.stop()
	}
	cancel()
	wg.Wait()
	t.Logf("%d starts and stops, %d spool commands alongside", cycles, looks)
	if looks < cycles/5 {
		t.Fatalf("only %d spool commands ran alongside %d starts: the test did not race them", looks, cycles)
	}
	// A command may time out (30 s) only if the daemon never answered: none should.
	if len(failed) > 0 {
		t.Fatalf("%d of %d spool commands failed, first: %s", len(failed), looks, failed[0])
	}
}
