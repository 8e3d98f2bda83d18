package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7/hl7test"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
)

// The destination points at a closed port, so every message stays queued:
// this measures durable ingest alone, with the queue growing as it would
// during an upstream outage.
const benchConfig = `device: {id: bench-gw, board: sim}
spool: {dir: %[1]s/spool, max_bytes: 4GiB%[3]s}
admin: {socket: %[1]s/admin.sock}
log: {level: error}
sources:
  - {name: mllp-in, type: mllp, listen: "127.0.0.1:%[2]d", max_connections: 64}
destinations:
  - {name: lis, type: mllp, address: "127.0.0.1:1", max_backoff: 1h}
`

// BenchmarkIngest drives the real daemon over MLLP with 1 and 16
// connections and reports durable ingest rate, ACK latency, fsyncs per
// message, peak RSS and bytes written to disk per message.
// HL7EDGE_BENCH_MESSAGES overrides the message count of the 16-connection run.
func BenchmarkIngest(b *testing.B) {
	total16 := 100_000
	if v, err := strconv.Atoi(os.Getenv("HL7EDGE_BENCH_MESSAGES")); err == nil && v > 0 {
		total16 = v
	}
	for _, tc := range []struct{ conns, total int }{{1, 5_000}, {16, total16}} {
		// Message traces and retention off, then on (the defaults), side
		// by side: what a trace header per message costs ingest.
		for _, trace := range []string{"off", "on"} {
			b.Run(fmt.Sprintf("conns=%d/trace=%s", tc.conns, trace), func(b *testing.B) {
				for range b.N {
					benchIngest(b, tc.conns, tc.total, trace == "on")
				}
			})
		}
	}
}

func benchIngest(b *testing.B, conns, total int, trace bool) {
	extra := ", trace_retain: 0s, retain: 0s"
	if trace {
		extra = ""
	}
	dir := b.TempDir()
	port := freePort(b)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfgPath := filepath.Join(dir, "hl7edge.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, benchConfig, dir, port, extra), 0o600); err != nil {
		b.Fatal(err)
	}
	d := startDaemon(b, cfgPath, filepath.Join(dir, "admin.sock"), addr)
	defer d.stop()
	pid := d.cmd.Process.Pid
	before := d.stats()
	wb0 := procIO(b, pid, "write_bytes")
	cpu0 := procCPU(b, pid)

	peak := watchRSS(pid)
	all, elapsed, msgBytes := drive(b, addr, conns, total)
	peakAnon, peakFile := peak()
	// HL7EDGE_BENCH_SMAPS names a file for the daemon's memory map at the
	// end of the run: which mappings (binary, tables, logs, heap) the
	// resident pages belong to.
	if p := os.Getenv("HL7EDGE_BENCH_SMAPS"); p != "" {
		sm, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
		if err == nil {
			err = os.WriteFile(p, sm, 0o600)
		}
		if err != nil {
			b.Error(err)
		}
	}
	after := d.stats()
	wb1 := procIO(b, pid, "write_bytes")
	cpu1 := procCPU(b, pid)
	hwm := procStatusKB(b, pid, "VmHWM")
	anon := procStatusKB(b, pid, "RssAnon")
	file := procStatusKB(b, pid, "RssFile")

	n := float64(len(all))
	b.ReportMetric(n/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(after.Commits-before.Commits)/n, "fsyncs/msg")
	b.ReportMetric(float64(hwm)/1024, "peak-RSS-MiB")
	// Badger maps its tables and logs into memory: file-backed pages the
	// kernel can drop at will. Anonymous memory is what the process owns.
	b.ReportMetric(float64(anon)/1024, "end-RssAnon-MiB")
	b.ReportMetric(float64(peakAnon)/1024, "peak-RssAnon-MiB")
	b.ReportMetric(float64(peakFile)/1024, "peak-RssFile-MiB")
	b.ReportMetric(float64(file)/1024, "end-RssFile-MiB")
	b.ReportMetric(float64(wb1-wb0)/n/float64(msgBytes), "disk-writes/msg-size")
	// The daemon's CPU time per message: steadier than the rate on a
	// machine shared with other work, which swings by a third.
	b.ReportMetric((cpu1-cpu0).Seconds()*1e6/n, "daemon-cpu-us/msg")
	b.ReportMetric(float64(after.Destinations["lis"].Queued), "queued")
	b.ReportMetric(float64(msgBytes), "msg-bytes")
}

// drive sends total messages over conns lockstep MLLP connections (each
// waits for its ACK before the next) and returns every ACK latency, sorted,
// the wall time and one message's size. Any refusal fails the benchmark.
func drive(b *testing.B, addr string, conns, total int) (lat []time.Duration, elapsed time.Duration, msgBytes int64) {
	b.Helper()
	// Lab results, or the old lorem body with HL7EDGE_BENCH_BODY=lorem.
	message := hl7test.BenchMessages()
	lats := make([][]time.Duration, conns)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range conns {
		wg.Go(func() {
			cl, err := mllp.Dial(context.Background(), addr, nil)
			if err != nil {
				b.Error(err)
				return
			}
			defer cl.Close()
			for n := c; n < total; n += conns {
				msg := message(n)
				t0 := time.Now()
				ack, err := cl.Send(context.Background(), msg)
				if err != nil {
					b.Error(err)
					return
				}
				if !bytes.Contains(ack, []byte("MSA|AA|")) {
					b.Errorf("message %d not accepted: %q", n, ack)
					return
				}
				lats[c] = append(lats[c], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed = time.Since(start)
	lat = slices.Concat(lats...)
	slices.Sort(lat)
	if len(lat) != total {
		b.Fatalf("%d of %d messages ACKed", len(lat), total)
	}
	msgBytes = int64(len(message(0)))
	return lat, elapsed, msgBytes
}

// watchRSS samples the process's anonymous and file-backed resident memory
// every 20 ms until the returned function is called, which gives the peaks.
func watchRSS(pid int) func() (anonKB, fileKB int64) {
	stop := make(chan struct{})
	done := make(chan struct{})
	var anon, file int64
	go func() {
		defer close(done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			a, f := statusKB(pid)
			anon, file = max(anon, a), max(file, f)
		}
	}()
	return func() (int64, int64) {
		close(stop)
		<-done
		return anon, file
	}
}

// statusKB reads RssAnon and RssFile without failing: the sampler must not
// call testing.TB from its own goroutine.
func statusKB(pid int) (anon, file int64) {
	v, err := procFields(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	return v["RssAnon"], v["RssFile"]
}

func procIO(b testing.TB, pid int, key string) int64 {
	return procField(b, fmt.Sprintf("/proc/%d/io", pid), key)
}

func procStatusKB(b testing.TB, pid int, key string) int64 {
	return procField(b, fmt.Sprintf("/proc/%d/status", pid), key)
}

func procField(b testing.TB, path, key string) int64 {
	v, err := procFields(path)
	if err != nil {
		b.Fatal(err)
	}
	n, ok := v[key]
	if !ok {
		b.Fatalf("%s has no %s", path, key)
	}
	return n
}

// procCPU is the process's user and system CPU time so far.
func procCPU(b testing.TB, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) in ")": state is 3, utime 14, stime 15.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticks
}

// procFields reads the "key: number ..." lines of a /proc file such as
// status or io.
func procFields(path string) (map[string]int64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	v := map[string]int64{}
	for line := range strings.SplitSeq(string(raw), "\n") {
		k, rest, ok := strings.Cut(line, ":")
		if f := strings.Fields(rest); ok && len(f) > 0 {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				v[k] = n
			}
		}
	}
	return v, nil
}
