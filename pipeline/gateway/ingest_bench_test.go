package gateway_test

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7/hl7test"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
)

const ingestYAML = `
spool:
  dir: {{DIR}}/spool
  max_bytes: 4GiB
{{TRACE}}
sources:
  - name: in
    type: mllp
    listen: {{MLLP}}
    max_connections: 64
destinations:
{{DEST}}
`

// ingestDests: a file destination draining as messages arrive, or an MLLP
// destination that is down, so everything stays queued and the profile
// shows intake alone.
var ingestDests = []struct{ name, yaml string }{
	{"drain=file", "  - {name: archive, type: file, dir: {{DIR}}/archive}"},
	{"drain=none", "  - {name: lis, type: mllp, address: \"127.0.0.1:1\", max_backoff: 1h}"},
}

// BenchmarkIngestInProcess runs the daemon's ingest path in this process:
// MLLP in, parse, route, group commit with its fsync, ACK out, while a file
// destination drains the queue at the same time, as in the daemon under
// load. It is the profile's subject for the per-stage breakdown:
//
//	go test -run '^$' -bench 'IngestInProcess/drain=none/conns=16' -benchtime 20000x \
//	    -cpuprofile cpu.out -memprofile mem.out ./pipeline/gateway/
//
// HL7EDGE_BENCH_TRACE=off turns message traces and retention off, to
// profile what they cost against the same run with them on.
//
// The load generator runs in the same process; its frames show up under
// mllp.(*Client) and sendSpread and are left out of the breakdown.
func BenchmarkIngestInProcess(b *testing.B) {
	for _, dest := range ingestDests {
		for _, conns := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/conns=%d", dest.name, conns), func(b *testing.B) { benchIngestInProcess(b, dest.yaml, conns) })
		}
	}
}

func benchIngestInProcess(b *testing.B, destYAML string, conns int) {
	r := newRig(b)
	r.quietLogs = true
	trace := ""
	if os.Getenv("HL7EDGE_BENCH_TRACE") == "off" {
		trace = "  trace_retain: 0s\n  retain: 0s"
	}
	g := r.startGateway(strings.NewReplacer("{{DEST}}", destYAML, "{{TRACE}}", trace).Replace(ingestYAML), nil)
	clients := make([]*mllp.Client, conns)
	for i := range clients {
		clients[i] = g.Dial(b)
	}
	message := hl7test.BenchMessages() // HL7EDGE_BENCH_BODY=lorem for the old body
	msgs := make([][]byte, b.N)
	for i := range msgs {
		msgs[i] = message(i)
	}
	b.SetBytes(int64(len(msgs[0])))
	commits0 := g.GW.Spool().Stats().Commits
	b.ResetTimer()
	start := time.Now()
	if err := sendSpread(clients, msgs); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	rate := float64(b.N) / time.Since(start).Seconds()
	// What stays live while the daemon runs: Badger's memtables, caches and
	// anything a pool holds on to. HL7EDGE_HEAP names a file for the heap
	// profile behind it.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "live-heap-MiB")
	if p := os.Getenv("HL7EDGE_HEAP"); p != "" {
		if err := writeHeapProfile(p); err != nil {
			b.Error(err)
		}
	}
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(float64(g.GW.Spool().Stats().Commits-commits0)/float64(b.N), "fsyncs/msg")
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
