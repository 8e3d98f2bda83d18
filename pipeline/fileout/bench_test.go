package fileout

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

// BenchmarkDeliver is the file destination's cost per message, one at a
// time (two disk flushes each) and in batches of 16 (two per batch), in the
// file system of the test's temporary directory.
func BenchmarkDeliver(b *testing.B) {
	raw := make([]byte, 1000)
	for i := range raw {
		raw[i] = byte('A' + i%26)
	}
	for _, batch := range []int{1, 16} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			o, err := New(Config{Dir: filepath.Join(b.TempDir(), "out")}, nil)
			if err != nil {
				b.Fatal(err)
			}
			ms := make([]*flow.Message, b.N)
			for i := range ms {
				ms[i] = &flow.Message{GUID: fmt.Sprintf("6f1c7a52-3b0e-4c1e-9d59-%012d", i), Raw: raw}
			}
			b.SetBytes(int64(len(raw)))
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for i := 0; i < len(ms); i += batch {
				part := ms[i:min(i+batch, len(ms))]
				if batch == 1 {
					err = o.Deliver(context.Background(), part[0])
				} else {
					err = o.DeliverBatch(context.Background(), part)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-us/msg")
		})
	}
}

// cpuTime is this process's user plus system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
