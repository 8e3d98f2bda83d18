package commitlog

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkSyncLatency puts the log's two ways of making a group durable
// side by side on the file system of the test's temporary directory: a
// direct write with O_DSYNC, and a write through the page cache with an
// fdatasync after it (build/bench/floor's way, but into written blocks). Each operation appends
// one record of 1,525 bytes (a group of one lab result, compressed, comes
// to 1,533 bytes with its header) and syncs it, on one log or the other at
// random, so whatever else loads the disk meanwhile falls on both alike.
// gap=50us and gap=100us leave the disk idle that long before each (one
// lockstep connection leaves 50 to 90 µs between its group commits; the
// idle-us metric is the gap measured); time.Sleep would not do, as it
// rounds such short sleeps up to a millisecond:
//
//	go test -run '^$' -bench SyncLatency -benchtime 5000x ./storage/commitlog/
//
// docs/performance.md ("A quiet run") has what it measured.
func BenchmarkSyncLatency(b *testing.B) {
	for _, gap := range []time.Duration{0, 50 * time.Microsecond, 100 * time.Microsecond} {
		b.Run(fmt.Sprintf("gap=%v", gap), func(b *testing.B) { benchSyncLatency(b, gap) })
	}
}

func benchSyncLatency(b *testing.B, gap time.Duration) {
	var logs [2]*Log // direct, buffered
	for i, buffered := range []bool{false, true} {
		l, err := Open(b.TempDir(), Options{Buffered: buffered, SegmentSize: 64 << 10})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = l.Close() })
		if err := l.Restart(); err != nil {
			b.Fatal(err)
		}
		logs[i] = l
	}
	if !logs[0].Stats().Direct {
		b.Skip("this file system allows no direct I/O: there is nothing to compare")
	}
	body := make([]byte, 1525)
	syncOne := func(l *Log) {
		if err := l.Append(body); err != nil {
			b.Fatal(err)
		}
		if err := l.Sync(); err != nil {
			b.Fatal(err)
		}
		l.Release(l.Current()) // reuse the segment files, as the spool does
	}
	// Enough to make every segment file the timed part will use.
	for range 200 {
		syncOne(logs[0])
		syncOne(logs[1])
	}
	// The thread sleeps with no timer slack; it ends with the benchmark.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0); err != nil {
		b.Fatal(err)
	}
	pause := unix.NsecToTimespec(gap.Nanoseconds())
	var took [2][]time.Duration
	var idle time.Duration
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for range b.N {
		if gap > 0 {
			t := time.Now()
			_ = unix.ClockNanosleep(unix.CLOCK_MONOTONIC, 0, &pause, nil)
			idle += time.Since(t)
		}
		i := rng.IntN(2)
		t0 := time.Now()
		syncOne(logs[i])
		took[i] = append(took[i], time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(float64(idle.Nanoseconds())/float64(b.N)/1e3, "idle-us")
	for i, name := range []string{"direct", "buffered"} {
		reportLatency(b, name, took[i])
	}
}

// reportLatency reports the median, the 90th percentile and the share over
// 200 µs of one way's syncs.
func reportLatency(b *testing.B, name string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	slow := 0
	if i := slices.IndexFunc(d, func(x time.Duration) bool { return x > 200*time.Microsecond }); i >= 0 {
		slow = len(d) - i
	}
	b.ReportMetric(float64(d[len(d)/2].Nanoseconds())/1e3, name+"-p50-us")
	b.ReportMetric(float64(d[len(d)*9/10].Nanoseconds())/1e3, name+"-p90-us")
	b.ReportMetric(100*float64(slow)/float64(len(d)), name+"-over200us-%")
}
