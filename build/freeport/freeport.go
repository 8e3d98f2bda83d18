// Package freeport hands a test a loopback TCP port for a server it starts
// later, a port no other test of any package takes meanwhile.
//
// The usual way, listening on port 0 and closing, returns a port from the
// kernel's ephemeral range: the same range every outgoing connection of
// every other test binary draws its local port from. With `go test ./...`
// running packages side by side, one of those connections took such a port
// before the test's server could bind it ("bind: address already in use",
// CI run of stop 33). So ports come from below the ephemeral range, which
// the kernel never hands out on its own, and each one is held by a lock
// file for the test's lifetime, which keeps the other test binaries off it.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// span is how many ports below the ephemeral range are drawn from.
const span = 8000

// Take returns a loopback port nobody listens on and no other test holds.
// The port stays reserved until tb ends.
func Take(tb testing.TB) int {
	tb.Helper()
	lo, hi := candidates()
	dir := filepath.Join(os.TempDir(), "hl7edge-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		tb.Fatalf("freeport: lock directory %s: %v", dir, err)
	}
	order := make([]int, hi-lo)
	start := rand.IntN(len(order))
	for i := range order {
		order[i] = lo + (start+i)%len(order)
	}
	port, lock := pick(dir, order)
	if lock == nil {
		tb.Fatalf("freeport: no free loopback port in %d–%d; are old test processes still running?", lo, hi-1)
	}
	tb.Cleanup(func() { _ = lock.Close() })
	return port
}

// pick returns the first of ports whose lock file in dir it can take and
// that nobody listens on, with its lock held; a nil lock if none is.
func pick(dir string, ports []int) (int, *os.File) {
	for _, port := range ports {
		lock, ok := reserve(dir, port)
		if !ok {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil { // something outside the tests has it
			_ = lock.Close()
			continue
		}
		_ = l.Close()
		return port, lock
	}
	return 0, nil
}

// Addr is Take as a 127.0.0.1:port address.
func Addr(tb testing.TB) string {
	tb.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Take(tb)))
}

// reserve takes the lock file for port without waiting. The lock goes
// with the file descriptor, so a test binary that dies gives its ports back.
func reserve(dir string, port int) (*os.File, bool) {
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%d.lock", port)), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, false
	}
	return f, true
}

// candidates is the range ports are drawn from: the span just below the
// kernel's ephemeral range (32768 unless configured otherwise), never
// below 1024.
func candidates() (lo, hi int) {
	hi = 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 1024+1000 {
				hi = v
			}
		}
	}
	lo = max(hi-span, 1024)
	return lo, hi
}
