package storage

import (
	"context"
	"runtime"
	"testing"
)

// IntakeIdle is what delivery gives way by: busy while an Append waits for
// its commit, and the busy channel closes once none does.
func TestIntakeIdleWhileAnAppendWaits(t *testing.T) {
	s := openTest(t, t.TempDir(), "a")
	defer s.Close()
	if _, busy := s.IntakeIdle(); busy != nil {
		t.Fatal("intake busy before any Append")
	}
	// Holding dropMu keeps the commit loop from committing, so the Append
	// below stays in flight until it is let go.
	s.dropMu.Lock()
	done := make(chan error, 1)
	go func() {
		_, err := s.Append(context.Background(), Entry{Source: "src", Raw: msg(1), Dests: []string{"a"}})
		done <- err
	}()
	var busy <-chan struct{}
	for busy == nil {
		runtime.Gosched()
		_, busy = s.IntakeIdle()
	}
	select {
	case <-busy:
		t.Fatal("busy channel closed while the Append still waits for its commit")
	default:
	}
	s.dropMu.Unlock()
	<-busy // closed once the Append has its answer
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, busy := s.IntakeIdle(); busy != nil {
		t.Fatal("intake still busy after the Append returned")
	}
}
