package storage

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BenchmarkTraceOverAQueue is what `hl7edge trace` costs on a spool
// holding a long queue, whose headers the queries read from the queue
// entries (tracequeued.go): by control ID, by GUID, and the first 100 of
// a time range. HL7EDGE_BENCH_BACKLOG sets the queue (100,000).
func BenchmarkTraceOverAQueue(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("HL7EDGE_BENCH_BACKLOG")); err == nil && v > 0 {
		n = v
	}
	s, err := Open(Config{Dir: b.TempDir(), MaxBytes: 1 << 30}, Options{Destinations: []string{"a"}, GCInterval: 100 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	guids := make([]string, n)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				r, err := s.Append(context.Background(), Entry{Source: "lab", Raw: labLike(i), Dests: []string{"a"}, ControlID: fmt.Sprintf("C%07d", i), Type: "ORU^R01"})
				if err != nil {
					b.Error(err)
					return
				}
				guids[i] = r.GUID
			}
		})
	}
	wg.Wait()
	mid := n / 2
	for _, q := range []struct {
		name string
		q    TraceQuery
		want int
	}{
		{"control-id", TraceQuery{ID: fmt.Sprintf("C%07d", mid)}, 1},
		{"guid", TraceQuery{ID: guids[mid]}, 1},
		{"since-first-100", TraceQuery{Since: time.Now().Add(-time.Hour), Limit: 100}, 100},
	} {
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				res, err := s.Trace(q.q)
				if err != nil || len(res.Messages) != q.want {
					b.Fatalf("%d messages (%v), want %d", len(res.Messages), err, q.want)
				}
			}
		})
	}
}
