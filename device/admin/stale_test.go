package admin

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
)

// TestRemovesOnlyAStaleSocket: the admin server clears its path only of a
// socket nobody answers on (one a killed daemon left). A regular file there,
// such as the replay record admin.socket was pointed at, stays byte for
// byte and the server refuses to start, naming it; a socket someone serves
// stays too; a file that took the socket's place while the server ran is
// not removed at stop.
func TestRemovesOnlyAStaleSocket(t *testing.T) {
	dir := t.TempDir()
	d := command.NewDispatcher(nil)
	run := func(path string) (context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- NewServer(path, d, nil).Run(ctx) }()
		return cancel, done
	}
	wait := func(done chan error) error {
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("the admin server did not return")
			return nil
		}
	}

	record := filepath.Join(dir, "signed-commands.json")
	const content = `{"ids":{"op-7740":"2026-11-30T12:00:00Z"}}` + "\n"
	if err := os.WriteFile(record, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	cancel, done := run(record)
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for returned := false; !returned; {
		select {
		case err = <-done:
			returned = true
		case <-time.After(5 * time.Millisecond):
		}
		if fi, lerr := os.Lstat(record); lerr != nil || !fi.Mode().IsRegular() {
			cancel()
			what := fmt.Sprint(lerr)
			if lerr == nil {
				what = "now " + fi.Mode().String()
			}
			t.Fatalf("the file at admin.socket was removed for the socket (%s)", what)
		}
		if time.Now().After(deadline) {
			t.Fatal("the admin server neither started nor returned")
		}
	}
	cancel()
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("admin.socket on a regular file: %v, want a refusal saying it is not a socket", err)
	}
	if b, _ := os.ReadFile(record); string(b) != content {
		t.Fatalf("the file at admin.socket was changed or removed: %q", b)
	}

	// A stale socket: bound, then its listener closed without unlinking.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = ln.Close()
	cancel, done = run(stale)
	waitServing(t, stale)
	// Someone else's file takes the socket's place while it runs.
	if err := os.Remove(stale); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := wait(done); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if b, _ := os.ReadFile(stale); string(b) != content {
		t.Errorf("stopping removed a file that was not its socket: %q", b)
	}

	// A live socket: another server answers on it.
	live := filepath.Join(dir, "live.sock")
	cancelLive, doneLive := run(live)
	waitServing(t, live)
	cancel, done = run(live)
	err = wait(done)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "answers") {
		t.Errorf("a second server on a live socket: %v, want a refusal saying something answers there", err)
	}
	if _, err := Call(context.Background(), live, command.Request{ID: "1", Name: "x"}); err != nil {
		t.Errorf("the first server no longer answers: %v", err)
	}
	cancelLive()
	if err := wait(doneLive); err != nil {
		t.Fatal(err)
	}
}

func waitServing(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", path); err == nil {
			_ = c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing answers on %s", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
