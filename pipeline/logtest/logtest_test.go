package logtest

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

func TestConcurrentWritersKeepWholeLines(t *testing.T) {
	var b Buffer
	log := slog.New(slog.NewTextHandler(&b, nil))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				log.Info("line", "g", g, "i", i)
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 800 {
		t.Fatalf("%d lines, want 800", len(lines))
	}
	for _, l := range lines {
		if !strings.Contains(l, "msg=line") || strings.Count(l, "time=") != 1 {
			t.Fatalf("interleaved line: %q", l)
		}
	}
	if !b.Contains(fmt.Sprintf("g=%d i=%d", 7, 99)) || b.Contains("g=8") {
		t.Errorf("Contains does not match what was written")
	}
	got := b.Bytes()
	got[0] = 'X'
	if b.String()[0] == 'X' {
		t.Error("Bytes returned the buffer itself, not a copy")
	}
}
