package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7/hl7test"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

// cardConfig is the gateway measured: the spool with every default (trace
// and retention on) on the card, a web service that takes every message.
// Only the source is raised, so that the mix's reports of up to 4 MiB and
// 16 connections are taken.
const cardConfig = `device: {id: card-gw, board: sim}
spool: {dir: %[1]s/spool%[6]s}
admin: {socket: %[2]s/admin.sock}
sources:
  - {name: mllp-in, type: mllp, listen: "127.0.0.1:%[3]d", max_connections: 64, max_message_bytes: 8MiB}
destinations:
  - {name: ehr, type: webservice, url: %[4]q, logon_id: card-gw, password_file: %[2]s/ehr.pass, ca_file: %[5]s}
`

// cardWorkload is one load the campaign measures.
type cardWorkload struct {
	Name  string
	Conns int
	Pace  time.Duration // per connection between sends; 0 sends flat out
	Large bool          // one message in ten a report of 256 KiB to 4 MiB
	// Spool is added to the spool's defaults. Flat out, intake outruns the
	// web service (a few dozen posts a second here) and the queue grows
	// by thousands of messages a second: with the default 2 GiB quota
	// intake would answer AE within the window, and the rest of it would
	// measure a gateway refusing messages.
	Spool string
}

var cardWorkloads = []cardWorkload{
	{Name: "lockstep10", Conns: 1, Pace: 100 * time.Millisecond},
	{Name: "flat16", Conns: 16, Spool: ", max_bytes: 12GiB"},
	{Name: "mix10", Conns: 1, Pace: 100 * time.Millisecond, Large: true},
}

// cardEnduranceBytes is the card endurance the projection uses: 80 TB
// written, the datasheet figure of a 32 GB industrial 3D TLC SD card
// (docs/performance.md, "What the card writes per message", says which).
const cardEnduranceBytes = 80e12

// cardResult is one workload's figures over its steady window.
type cardResult struct {
	Workload         string  `json:"workload"`
	Seconds          float64 `json:"seconds"`
	Acked            int64   `json:"messages_acked"`
	MessageBytes     int64   `json:"message_bytes"`
	DeviceBytes      int64   `json:"device_bytes_written"`
	WriteIOs         int64   `json:"write_ios"`
	Flushes          int64   `json:"flushes"`
	Commits          uint64  `json:"spool_commits"`
	DaemonWriteBytes int64   `json:"daemon_write_bytes"`
	JournalTx        int64   `json:"journal_transactions"`
	JournalBytesEst  int64   `json:"journal_bytes_estimate"`
	QueuedAtEnd      int64   `json:"queued_at_end"`
	MsgsPerSecond    float64 `json:"messages_per_second"`
	BytesPerMsg      float64 `json:"bytes_per_message"`
	IOsPerMsg        float64 `json:"write_ios_per_message"`
	FlushesPerMsg    float64 `json:"flushes_per_message"`
	WrittenRatio     float64 `json:"written_to_message_bytes"`
	CardYearsAt10    float64 `json:"card_years_at_10_per_second"`
}

// TestCardWear is `make cardwear` (docs/performance.md, "What the card
// writes per message"): each workload runs the real daemon with its spool
// alone on a fresh ext4 on a loop device, and the device's own counters
// give the bytes, write I/Os and flushes per message ACKed. It is long and
// needs root, so it runs only when HL7EDGE_CARDWEAR is set.
func TestCardWear(t *testing.T) {
	if os.Getenv("HL7EDGE_CARDWEAR") == "" {
		t.Skip("a long measurement that needs root: make cardwear (HL7EDGE_CARDWEAR=1)")
	}
	needCardTools(t)
	window := envSeconds(t, "CARDWEAR_SECONDS", 600)
	warmup := envSeconds(t, "CARDWEAR_WARMUP", 30)
	only := os.Getenv("CARDWEAR_ONLY")
	var results []cardResult
	picked := 0
	for _, w := range cardWorkloads {
		if only != "" && !strings.Contains(","+only+",", ","+w.Name+",") {
			continue
		}
		picked++
		t.Run(w.Name, func(t *testing.T) {
			results = append(results, measureCard(t, w, warmup, window))
		})
	}
	if picked == 0 {
		t.Fatalf("CARDWEAR_ONLY=%q names no workload; name one or more of lockstep10, flat16, mix10, comma-separated", only)
	}
	if len(results) == 0 {
		return // every workload failed; their errors say why
	}
	printCardTable(t, results)
	if p := os.Getenv("CARDWEAR_REPORT"); p != "" {
		out, _ := json.MarshalIndent(map[string]any{
			"warmup_seconds": warmup.Seconds(), "file_system": "ext4, 4 KiB blocks, journal on (data=ordered), mounted noatime",
			"endurance_bytes": cardEnduranceBytes, "workloads": results}, "", "  ")
		if err := os.WriteFile(p, append(out, '\n'), 0o644); err != nil {
			t.Error(err)
		}
	}
}

func envSeconds(t *testing.T, name string, def int) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return time.Duration(def) * time.Second
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a whole number of seconds, 1 or more", name, v)
	}
	return time.Duration(n) * time.Second
}

// cardSample is every counter at one instant.
type cardSample struct {
	at           time.Time
	acked, bytes int64
	dev          devCounters
	journal      journalCounters
	commits      uint64
	daemonWrites int64
}

// measureCard runs one workload: warmup, then the window whose deltas are
// the result; the senders keep going across both.
func measureCard(t *testing.T, w cardWorkload, warmup, window time.Duration) cardResult {
	card := mountCardFS(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ehr.pass"), []byte("card-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url, ca := startWebservice(t, dir, refserver.Config{Logon: "card-gw", Password: "card-pw"})
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(dir, "hl7edge.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, cardConfig, card.Dir, dir, port, url, ca, w.Spool), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, cfg, filepath.Join(dir, "admin.sock"), addr)
	// Registered after the mount's cleanup, so it runs first: the daemon
	// is gone before the file system is unmounted, on every way out.
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			d.kill()
		}
	})
	var acked, sent atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	senders := startCardSenders(ctx, t, w, addr, &acked, &sent)
	sample := func() cardSample {
		return cardSample{at: time.Now(), acked: acked.Load(), bytes: sent.Load(),
			dev: readDevCounters(t, card.Dev), journal: readJournal(card.Dev),
			commits: d.stats().Commits, daemonWrites: procIO(t, d.cmd.Process.Pid, "write_bytes")}
	}
	time.Sleep(warmup)
	s0 := sample()
	time.Sleep(window)
	s1 := sample()
	end := d.stats().Destinations["ehr"]
	t.Logf("%s: at the end of the window the web service had %d messages delivered, %d queued", w.Name, end.Delivered, end.Queued)
	t.Logf("%s: the spool's files at the end of the window: %s", w.Name, spoolFiles(filepath.Join(card.Dir, "spool")))
	cancel()
	senders.Wait()
	d.stop()
	r := cardFigures(w.Name, s0, s1)
	r.QueuedAtEnd = end.Queued
	if r.Acked == 0 {
		t.Fatalf("%s: no message was ACKed in the %v window:\n%s", w.Name, window, d.tail(20))
	}
	return r
}

func cardFigures(name string, s0, s1 cardSample) cardResult {
	r := cardResult{
		Workload: name, Seconds: s1.at.Sub(s0.at).Seconds(),
		Acked: s1.acked - s0.acked, MessageBytes: s1.bytes - s0.bytes,
		DeviceBytes: (s1.dev.Sectors - s0.dev.Sectors) * 512,
		WriteIOs:    s1.dev.WriteIOs - s0.dev.WriteIOs, Flushes: s1.dev.Flushes - s0.dev.Flushes,
		Commits: s1.commits - s0.commits, DaemonWriteBytes: s1.daemonWrites - s0.daemonWrites,
		JournalTx: s1.journal.Transactions - s0.journal.Transactions,
	}
	r.JournalBytesEst = r.JournalTx * s1.journal.LoggedPerTx * 4096
	n := float64(max(r.Acked, 1))
	r.MsgsPerSecond = float64(r.Acked) / r.Seconds
	r.BytesPerMsg = float64(r.DeviceBytes) / n
	r.IOsPerMsg = float64(r.WriteIOs) / n
	r.FlushesPerMsg = float64(r.Flushes) / n
	r.WrittenRatio = float64(r.DeviceBytes) / float64(max(r.MessageBytes, 1))
	perDay := r.BytesPerMsg * 10 * 86400
	r.CardYearsAt10 = cardEnduranceBytes / perDay / 365
	return r
}

// startCardSenders starts w.Conns lockstep MLLP connections (each waits
// for its ACK before the next send), paced or flat out, until ctx ends;
// acked and bytes count what the gateway accepted.
func startCardSenders(ctx context.Context, t *testing.T, w cardWorkload, addr string, acked, bytesAcked *atomic.Int64) *sync.WaitGroup {
	var wg sync.WaitGroup
	for c := range w.Conns {
		wg.Go(func() {
			cl, err := mllp.Dial(ctx, addr, nil)
			if err != nil {
				t.Errorf("connection %d: %v", c, err)
				return
			}
			defer cl.Close()
			next := time.Now()
			for n := c; ctx.Err() == nil; n += w.Conns {
				if w.Pace > 0 {
					next = next.Add(w.Pace)
					sleepUntil(ctx, next)
				}
				msg := cardMessage(w, n)
				ack, err := cl.Send(ctx, msg)
				if ctx.Err() != nil {
					return
				}
				if err != nil || !bytes.Contains(ack, []byte("MSA|AA|")) {
					t.Errorf("connection %d message %d (%d bytes): %v, ACK %.40q", c, n, len(msg), err, ack)
					return
				}
				acked.Add(1)
				bytesAcked.Add(int64(len(msg)))
			}
		})
	}
	return &wg
}

// sleepUntil waits for at, or less if ctx ends; a sender that fell behind
// (a large report took long) sends at once.
func sleepUntil(ctx context.Context, at time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(at)):
	}
}

// cardMessage is message n: a lab result, or in the mix one in ten a
// report whose size is spread evenly on a log scale from 256 KiB to 4 MiB
// (as the power-cut rig's large reports are).
func cardMessage(w cardWorkload, n int) []byte {
	if !w.Large || n%10 != 5 {
		return hl7test.LabResult(n)
	}
	const lo, hi = 256 << 10, 4 << 20
	frac := math.Mod(float64(n/10)*0.6180339887, 1) // golden-ratio steps: an even spread without a random source
	size := int(lo * math.Pow(hi/lo, frac))
	return hl7test.Report(fmt.Sprintf("R%07d", n), fmt.Sprintf("MRN%07d", n), uint64(n), size)
}

func printCardTable(t *testing.T, rs []cardResult) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-11s %8s %7s %8s %13s %14s %9s %9s %10s %9s %8s %9s %8s %9s %9s %7s\n",
		"workload", "seconds", "msgs/s", "acked", "msg bytes", "device bytes", "write IOs", "flushes",
		"bytes/msg", "IOs/msg", "fl/msg", "written/", "commits", "journal", "daemon", "years")
	fmt.Fprintf(&b, "%-11s %8s %7s %8s %13s %14s %9s %9s %10s %9s %8s %9s %8s %9s %9s %7s\n",
		"", "", "", "", "", "", "", "", "", "", "", "msg bytes", "/msg", "est. %", "writes %", "at 10/s")
	for _, r := range rs {
		fmt.Fprintf(&b, "%-11s %8.0f %7.1f %8d %13d %14d %9d %9d %10.0f %9.2f %8.2f %9.2f %8.2f %9.0f %9.0f %7.1f\n",
			r.Workload, r.Seconds, r.MsgsPerSecond, r.Acked, r.MessageBytes, r.DeviceBytes, r.WriteIOs, r.Flushes,
			r.BytesPerMsg, r.IOsPerMsg, r.FlushesPerMsg, r.WrittenRatio, float64(r.Commits)/float64(max(r.Acked, 1)),
			100*float64(r.JournalBytesEst)/float64(max(r.DeviceBytes, 1)),
			100*float64(r.DaemonWriteBytes)/float64(max(r.DeviceBytes, 1)), r.CardYearsAt10)
	}
	t.Log(b.String())
}

// spoolFiles lists the spool's files by kind (extension) with their count
// and bytes: where the card's space went.
func spoolFiles(dir string) string {
	type kind struct{ n, size int64 }
	kinds := map[string]*kind{}
	_ = filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			return nil
		}
		ext := filepath.Ext(e.Name())
		if ext == "" {
			ext = e.Name()
		}
		if kinds[ext] == nil {
			kinds[ext] = &kind{}
		}
		kinds[ext].n++
		kinds[ext].size += fi.Size()
		return nil
	})
	var parts []string
	for ext, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d (%d bytes)", ext, k.n, k.size))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
