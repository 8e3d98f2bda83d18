// Package syncgatetest makes, for tests, the moment a gate exists for: a
// writer has begun writing, and another writer's flush on the same file
// system fails before the first one syncs.
package syncgatetest

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// FailMeanwhile runs write while another writer's sync holds gate, waits
// until write has begun (a file matching pattern, its temporary file, has
// appeared), then fails that sync with EIO and returns write's error. It
// fails the test when write ends before it began waiting for the gate: a
// write whose sync does not go through the gate.
func FailMeanwhile(t testing.TB, gate *syncgate.Gate, pattern string, write func() error) error {
	t.Helper()
	held, release := make(chan struct{}), make(chan struct{})
	other := make(chan error, 1)
	go func() {
		other <- gate.Sync(gate.Epoch(), func() error {
			close(held)
			<-release
			return syscall.EIO
		})
	}()
	<-held
	released := false
	defer func() { // also when the test fails: the gate must not stay held
		if !released {
			close(release)
		}
	}()
	done := make(chan error, 1)
	go func() { done <- write() }()
	deadline := time.Now().Add(30 * time.Second)
	for !exists(t, pattern) {
		select {
		case err := <-done:
			t.Fatalf("the write ended (%v) while another writer's sync held the gate: its sync does not go through the gate", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no file matching %s appeared within 30 s while another writer held the gate (a write that syncs its file outside the gate renames it before it waits)", pattern)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	released = true
	if err := <-other; !errors.Is(err, syscall.EIO) {
		t.Fatalf("the other writer's sync: %v, want EIO", err)
	}
	return <-done
}

func exists(t testing.TB, pattern string) bool {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return len(m) > 0
}
