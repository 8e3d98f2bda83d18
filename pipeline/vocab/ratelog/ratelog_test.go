package ratelog

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/logtest"
)

func TestFloodIsHeldBackPerKind(t *testing.T) {
	var buf logtest.Buffer
	h := New(slog.NewTextHandler(&buf, nil), time.Second, 3)
	now := time.Unix(1000, 0)
	h.st.now = func() time.Time { return now }
	log := slog.New(h)
	for i := range 1000 {
		log.With("peer", i).Warn("connection refused")
	}
	log.Info("other kind")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 3 of the flood and 1 other:\n%s", len(lines), buf.String())
	}
	now = now.Add(time.Second)
	log.Warn("connection refused")
	last := buf.String()
	if !strings.Contains(last, "suppressed=997") {
		t.Errorf("the first line of the next interval does not count the 997 held back:\n%s", last)
	}
}
