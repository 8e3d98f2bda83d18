package gateway_test

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

// envInt reads a positive integer from the environment, or def.
func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		tb.Fatalf("%s=%q: want a positive whole number", name, v)
	}
	return n
}

// sendSpread sends msgs over the clients, message i on client i%len: each
// client sends its share in order, all clients at once.
func sendSpread(clients []*mllp.Client, msgs [][]byte) error {
	var wg sync.WaitGroup
	errs := make([]error, len(clients))
	for c, cl := range clients {
		var mine [][]byte
		for i := c; i < len(msgs); i += len(clients) {
			mine = append(mine, msgs[i])
		}
		wg.Go(func() { errs[c] = sendAll(cl, mine) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkEndToEnd: messages from 4 MLLP connections until every one is
// stored and acknowledged by the reference web service over loopback HTTPS.
// Each iteration sends HL7EDGE_BENCH_E2E_MESSAGES (default 2000) messages.
// msgs/s counts from the first send to the last message stored at the
// service; ack_msgs/s until the last AA.
//
// The reference service fsyncs every stored file and its directory before it
// acknowledges, and posting is one message per round trip, so the rate is
// bounded by the service's disk. The store=tmpfs run puts the service's
// store in memory (the gateway's spool stays on disk) to show the gateway's
// own ceiling.
func BenchmarkEndToEnd(b *testing.B) {
	b.Run("store=disk", func(b *testing.B) { benchEndToEnd(b, "") })
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		b.Run("store=tmpfs", func(b *testing.B) {
			dir, err := os.MkdirTemp("/dev/shm", "hl7edge-bench-*")
			if err != nil {
				b.Skip(err)
			}
			defer os.RemoveAll(dir)
			benchEndToEnd(b, dir)
		})
	}
}

func benchEndToEnd(b *testing.B, storeDir string) {
	n := envInt(b, "HL7EDGE_BENCH_E2E_MESSAGES", 2000)
	r := newRig(b)
	ws := r.startWebService("ehr", wsOptions{NoRecord: true, StoreDir: storeDir})
	g := r.startWSGateway(ws, "")
	clients := make([]*mllp.Client, 4)
	for i := range clients {
		clients[i] = g.Dial(b)
	}
	var total int
	var inFlight, toAck time.Duration
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		b.StopTimer()
		msgs := make([][]byte, n)
		for i := range msgs {
			msgs[i] = oru(fmt.Sprintf("B%d-%d", it, i))
		}
		b.StartTimer()
		start := time.Now()
		if err := sendSpread(clients, msgs); err != nil {
			b.Fatal(err)
		}
		toAck += time.Since(start)
		total += n
		for ws.Ref.Stats().Stored < uint64(total) {
			time.Sleep(2 * time.Millisecond)
		}
		inFlight += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(total)/inFlight.Seconds(), "msgs/s")
	b.ReportMetric(float64(total)/toAck.Seconds(), "ack_msgs/s")
	b.ReportMetric(float64(ws.Conns.Load()), "service_conns")
	b.ReportMetric(float64(n), "msgs/op")
}

// BenchmarkDrainWithLatency: a backlog built up with the destination
// paused (HL7EDGE_BENCH_BACKLOG messages, default 800, over 40 patients sent
// round-robin) is drained while the service adds 20 ms to every reply, with
// 1, 4 and 8 lanes side by side in one run. With one lane posting is one
// message per round trip in spool order, so the rate is bounded by
// 1/latency; lanes post different patients' messages in parallel over kept
// connections (the service should see one connection per lane). Each run
// also checks that every patient's messages arrived in sending order, once
// each, byte-identical; speedup is the rate over the 1-lane rate of the same
// run. The service fsyncs every message it stores (in parallel for
// different GUIDs); HL7EDGE_BENCH_STORE_IN=/dev/shm puts its store in
// memory, to take this machine's disk out of the figure.
func BenchmarkDrainWithLatency(b *testing.B) {
	var oneLane float64
	for _, lanes := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("lanes=%d", lanes), func(b *testing.B) {
			rate := benchDrain(b, lanes)
			if lanes == 1 {
				oneLane = rate
			} else if oneLane > 0 {
				b.ReportMetric(rate/oneLane, "speedup")
			}
		})
	}
}

func benchDrain(b *testing.B, lanes int) float64 {
	n := envInt(b, "HL7EDGE_BENCH_BACKLOG", 800)
	const delay = 20 * time.Millisecond
	var drained time.Duration
	var conns int64
	var sessions uint64
	for it := 0; it < b.N; it++ {
		b.StopTimer()
		r := newRig(b)
		store := ""
		if parent := os.Getenv("HL7EDGE_BENCH_STORE_IN"); parent != "" {
			dir, err := os.MkdirTemp(parent, "hl7edge-bench-*")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = os.RemoveAll(dir) })
			store = dir
		}
		ws := r.startWebService("ehr", wsOptions{NoRecord: true, StoreDir: store, Faults: refserver.Faults{Delay: delay}})
		g := r.startWSGateway(ws, fmt.Sprintf("    lanes: %d\n", lanes))
		if err := g.GW.Pause("ehr"); err != nil {
			b.Fatal(err)
		}
		msgs, who := patientMsgs(fmt.Sprintf("D%d", it), n, 40)
		if err := sendAll(g.Dial(b), msgs); err != nil {
			b.Fatal(err)
		}
		if q := g.Queue("ehr"); q.Queued != int64(n) {
			b.Fatalf("backlog %d, want %d", q.Queued, n)
		}
		before := ws.Conns.Load()
		b.StartTimer()
		start := time.Now()
		if err := g.GW.Resume("ehr"); err != nil {
			b.Fatal(err)
		}
		for g.Queue("ehr").Queued > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		drained += time.Since(start)
		b.StopTimer()
		checkPerPatient(b, g, ws, msgs, who, 10*time.Second)
		conns += ws.Conns.Load() - before
		sessions += ws.Ref.Stats().Pings
		g.Stop(b)
	}
	rate := float64(n*b.N) / drained.Seconds()
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(float64(conns)/float64(b.N), "service_conns")
	b.ReportMetric(float64(sessions)/float64(b.N), "pings")
	b.ReportMetric(float64(drained.Milliseconds())/float64(n*b.N), "ms/msg")
	b.ReportMetric(float64(n), "backlog")
	return rate
}
