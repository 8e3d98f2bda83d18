package storage

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// labLike is a lab result of about 1.1 KiB whose values differ in every
// message, as hl7test.LabResult's do (storage may not import it): what
// the tables' compression sees in a real backlog.
func labLike(i int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "MSH|^~\\&|LAB|WARD|EHR|HOSP|20260101%06d||ORU^R01|C%08d|P|2.5.1\r", i%240000, i)
	fmt.Fprintf(&b, "PID|1||%08d^^^HOSP^MR||DOE^JANE^%c||19%02d0101|F\r", i*7919%100000000, 'A'+i%26, i%100)
	fmt.Fprintf(&b, "OBR|1|%d|%d|CBC^Complete blood count^LN|||20260101%06d\r", i, i*31, i%240000)
	for k := 1; k <= 12; k++ {
		fmt.Fprintf(&b, "OBX|%d|NM|%d-%d^Analyte %d^LN||%d.%d|mmol/L|%d-%d|N|||F\r", k, 700+k, i%10, k, (i*k)%97, (i+k)%10, k, k*3)
	}
	return []byte(b.String())
}

// BenchmarkDrainBacklog is the read side of the spool: a backlog of
// lab results (an upstream that was away) drained by one destination,
// Next in batches of 16 and a delivery mark for each, as a lane does.
// It reports µs per message; HL7EDGE_BENCH_BACKLOG sets the backlog.
func BenchmarkDrainBacklog(b *testing.B) {
	n := 20_000
	if v, err := strconv.Atoi(os.Getenv("HL7EDGE_BENCH_BACKLOG")); err == nil && v > 0 {
		n = v
	}
	for range b.N {
		b.StopTimer()
		s, err := Open(Config{Dir: b.TempDir(), MaxBytes: 1 << 30}, Options{Destinations: []string{"a"}, GCInterval: 100 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		fillBacklog(b, s, n)
		b.StartTimer()
		t0 := time.Now()
		var after uint64
		for got := 0; got < n; {
			ms, err := s.Next("a", after, 16)
			if err != nil || len(ms) == 0 {
				b.Fatalf("after %d of %d: %d messages, %v", got, n, len(ms), err)
			}
			for _, m := range ms {
				if err := s.Delivered("a", m.Seq); err != nil {
					b.Fatal(err)
				}
				after = m.Seq
			}
			got += len(ms)
		}
		b.ReportMetric(float64(time.Since(t0).Microseconds())/float64(n), "us/msg")
		b.StopTimer()
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// fillBacklog queues n lab results for "a" from 16 senders, so group
// commits fill the spool as fast as ingest would.
func fillBacklog(b *testing.B, s *Spool, n int) {
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				if _, err := s.Append(context.Background(), Entry{Source: "s", Raw: labLike(i), Dests: []string{"a"}}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}
