package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// peerConfig is the daemon as measured against a peer: an MLLP port and a
// file destination draining the queue at the same time, as in a ward where
// the upstream is up.
const peerConfig = `device: {id: bench-gw, board: sim}
spool: {dir: %[1]s/spool, max_bytes: 4GiB}
admin: {socket: %[1]s/admin.sock}
log: {level: error}
sources:
  - {name: mllp-in, type: mllp, listen: "127.0.0.1:%[2]d", max_connections: 64}
destinations:
  - {name: archive, type: file, dir: %[1]s/archive}
`

// BenchmarkVersusPeer puts hl7edge's durable ingest beside simple-hl7 (a
// Node.js MLLP server that parses and ACKs but keeps nothing) and beside the
// disk's own fsync rate, in one run on one machine, with the same lockstep
// load generator:
//
//   - disk: 1 KiB writes each followed by fdatasync, in the spool's file system
//   - hl7edge with 1 and 16 connections (file destination draining)
//   - the floor (build/bench/floor): hl7edge's own framing, parser and ACK
//     answering at once (floor-ack), and writing each message to a file
//     with fdatasync before its ACK (floor-sync): the least any server that
//     keeps the ACK's promise can do with this load generator here
//   - simple-hl7 with 1 and 16 connections, when HL7EDGE_SIMPLEHL7 names a
//     directory holding node_modules/simple-hl7 (make bench installs it)
//
// Besides rate and latency it reports the server's CPU time per message
// (user+system from /proc), which a busy machine distorts far less than
// rates. HL7EDGE_BENCH_MESSAGES sets the 16-connection count (default 50,000).
func BenchmarkVersusPeer(b *testing.B) {
	total16 := 50_000
	if v, err := strconv.Atoi(os.Getenv("HL7EDGE_BENCH_MESSAGES")); err == nil && v > 0 {
		total16 = v
	}
	b.Run("disk", func(b *testing.B) {
		b.ReportMetric(fsyncRate(b, b.TempDir(), 3*time.Second), "fsyncs/s")
	})
	for _, tc := range []struct{ conns, total int }{{1, 5_000}, {16, total16}} {
		b.Run(fmt.Sprintf("hl7edge/conns=%d", tc.conns), func(b *testing.B) {
			dir := b.TempDir()
			port := freePort(b)
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			cfgPath := filepath.Join(dir, "hl7edge.yaml")
			if err := os.WriteFile(cfgPath, fmt.Appendf(nil, peerConfig, dir, port), 0o600); err != nil {
				b.Fatal(err)
			}
			d := startDaemon(b, cfgPath, filepath.Join(dir, "admin.sock"), addr)
			defer d.stop()
			measurePeer(b, d.cmd.Process.Pid, addr, tc.conns, tc.total)
		})
	}
	floorBin := filepath.Join(b.TempDir(), "floor")
	if out, err := exec.Command("go", "build", "-o", floorBin, "../../build/bench/floor").CombinedOutput(); err != nil {
		b.Fatalf("build the floor server: %v\n%s", err, out)
	}
	for _, durable := range []bool{false, true} {
		name := "floor-ack"
		if durable {
			name = "floor-sync"
		}
		for _, tc := range []struct{ conns, total int }{{1, 5_000}, {16, total16}} {
			b.Run(fmt.Sprintf("%s/conns=%d", name, tc.conns), func(b *testing.B) {
				port := freePort(b)
				addr := fmt.Sprintf("127.0.0.1:%d", port)
				args := []string{"-listen", addr}
				if durable {
					args = append(args, "-sync", filepath.Join(b.TempDir(), "floor.log"))
				}
				pid := startListener(b, exec.Command(floorBin, args...))
				measurePeer(b, pid, addr, tc.conns, tc.total)
			})
		}
	}
	peerDir := os.Getenv("HL7EDGE_SIMPLEHL7")
	node, nodeErr := exec.LookPath("node")
	for _, tc := range []struct{ conns, total int }{{1, 5_000}, {16, total16}} {
		b.Run(fmt.Sprintf("simple-hl7/conns=%d", tc.conns), func(b *testing.B) {
			if peerDir == "" || nodeErr != nil {
				b.Skip("simple-hl7 not set up: run `make bench`, which installs it with npm into a scratch directory and sets HL7EDGE_SIMPLEHL7")
			}
			port := freePort(b)
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			script, err := filepath.Abs("../../build/bench/simple-hl7-peer.js")
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(node, script, strconv.Itoa(port))
			cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(peerDir, "node_modules"))
			measurePeer(b, startListener(b, cmd), addr, tc.conns, tc.total)
		})
	}
}

// startListener starts a peer server that prints a line starting with
// "listening" once it takes connections, and stops it when b ends.
func startListener(b *testing.B, cmd *exec.Cmd) (pid int) {
	b.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || !strings.HasPrefix(line, "listening") {
		b.Fatalf("%s did not start: %q %v", cmd.Path, line, err)
	}
	return cmd.Process.Pid
}

// measurePeer drives one server and reports what BenchmarkVersusPeer compares.
func measurePeer(b *testing.B, pid int, addr string, conns, total int) {
	cpu0 := cpuSeconds(b, pid)
	lat, elapsed, _ := drive(b, addr, conns, total)
	cpu1 := cpuSeconds(b, pid)
	n := float64(len(lat))
	b.ReportMetric(n/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric((cpu1-cpu0)/n*1e6, "server-cpu-us/msg")
	b.ReportMetric(float64(procStatusKB(b, pid, "VmHWM"))/1024, "peak-RSS-MiB")
}

// fsyncRate is how many 1 KiB appends, each made durable with fdatasync,
// the file system under dir takes per second: the ceiling of one lockstep
// sender to a server that syncs before each ACK. The file is allocated
// first, as Badger's memtable log is, so the sync carries no size change.
func fsyncRate(b *testing.B, dir string, d time.Duration) float64 {
	f, err := os.Create(filepath.Join(dir, "fsync-probe"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const size = 64 << 20
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1024)
	var n int
	start := time.Now()
	for off := int64(0); time.Since(start) < d && off+1024 <= size; off += 1024 {
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds()
}

// cpuSeconds is a process's user plus system CPU time so far.
func cpuSeconds(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name may hold spaces; fields are counted after its ')'.
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	const ticks = 100 // USER_HZ on Linux
	return (utime + stime) / ticks
}
