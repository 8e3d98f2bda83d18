package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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

// TestSecondDaemonOnTheSameSpool: a second daemon started on a spool that
// a running daemon holds says that another daemon (with its pid) holds it,
// not an operator's spool command, and SIGTERM ends its wait at once
// instead of after the lock wait's 60 s (issue 28, point 6).
func TestSecondDaemonOnTheSameSpool(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	first := filepath.Join(dir, "first.yaml")
	writeConfig(t, first, fmt.Sprintf(spoolCLIConfig, dir, port))
	d := startDaemon(t, first, filepath.Join(dir, "admin.sock"), fmt.Sprintf("127.0.0.1:%d", port))
	defer d.stop()

	second := filepath.Join(dir, "second.yaml")
	writeConfig(t, second, strings.Replace(fmt.Sprintf(spoolCLIConfig, dir, freePort(t)), "admin.sock", "admin2.sock", 1))
	cmd := exec.Command(binPath, "run", "--config", second)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var waiting string
	for waiting == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the second daemon exited without saying it waits for the spool (exit %v)", cmd.Wait())
			}
			if strings.Contains(l, "spool is in use") {
				waiting = l
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatal("the second daemon did not say within 30s that it waits for the spool")
		}
	}
	if !strings.Contains(waiting, "another hl7edge daemon") || !strings.Contains(waiting, strconv.Itoa(d.cmd.Process.Pid)) ||
		strings.Contains(waiting, "hl7edge spool") {
		t.Errorf("the waiting line blames the wrong process; want another daemon with pid %d:\n%s", d.cmd.Process.Pid, waiting)
	}
	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() {
		for range lines {
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the second daemon exited with %v after SIGTERM, want 0 (a requested stop)", err)
		}
		t.Logf("the second daemon stopped %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the second daemon ignored SIGTERM for 10s while waiting for the spool lock")
	}
}
