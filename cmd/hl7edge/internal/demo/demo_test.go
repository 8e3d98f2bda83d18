package demo

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/hl7edge/hl7edge/build/freeport"
)

// syncBuffer is written by the demo and by the sim board's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunOnce runs the whole demo in-process: every sample is acknowledged
// AA, the T message is eaten, the others reach the web service and the file
// destination, and Run returns only after the gateway has stopped.
func TestRunOnce(t *testing.T) {
	var out, log syncBuffer
	err := Run(context.Background(), Options{Dir: t.TempDir(), Port: freeport.Take(t), Once: true, Version: "test", Stdout: &out, Stderr: &log})
	if err != nil {
		t.Fatalf("Run: %v\nstdout:\n%s\nlog:\n%s", err, out.String(), log.String())
	}
	for _, want := range []string{"MLLP   DEMO0001 -> AA", "MLLP   DEMO0003 -> AA", "serial DEMO0004 -> AA",
		"DEMO0002", "eaten by the tests-bin rubbish bin", "3 copies in the file destination", "try next:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// A cancelled context before the gateway is up ends Run with an error and
// leaves nothing running (the race detector and the test's end show it).
func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, log syncBuffer
	err := Run(ctx, Options{Dir: t.TempDir(), Port: freeport.Take(t), Version: "test", Stdout: &out, Stderr: &log})
	if err == nil || strings.Contains(err.Error(), "%!") {
		t.Fatalf("Run with a cancelled context = %v, want an error that says why:\n%s", err, out.String())
	}
}
