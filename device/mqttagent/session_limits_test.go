package mqttagent

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// The session counter at its limits: past 2^32 and the digit changes it
// keeps counting, and at the largest value it refuses rather than wrapping
// to a number a fleet would take for an old session.
func TestSessionCounterAtItsLimits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.session")
	for _, from := range []uint64{9, 99999, 1<<32 - 1, 1<<63 - 1, math.MaxUint64 - 1} {
		if err := os.WriteFile(path, []byte(strconv.FormatUint(from, 10)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		n, err := nextSession(nil, path)
		if err != nil || n != from+1 {
			t.Fatalf("after %d: %d, %v", from, n, err)
		}
		b, _ := os.ReadFile(path)
		if got, err := parseSession(b); err != nil || got != from+1 {
			t.Fatalf("after %d the file holds %q", from, b)
		}
	}
	if n, err := nextSession(nil, path); err == nil {
		t.Fatalf("past the largest counter: %d, want a refusal", n)
	}
}
