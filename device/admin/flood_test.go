package admin

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
)

// TestIdleConnectionsCannotHoldTheSocket: a local process that opens 300
// connections and sends nothing (issue 18 saw 3,000 held for five minutes
// each) gets all but a few closed at once, and an operator's command still
// gets through.
func TestIdleConnectionsCannotHoldTheSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	d := command.NewDispatcher(nil)
	d.Register("echo", func(_ context.Context, args json.RawMessage) (any, string, error) { return nil, "echoed", nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(sock, d, nil).Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("socket never appeared")
		}
		time.Sleep(5 * time.Millisecond)
	}
	const idle = 300
	var closed atomic.Int64
	var wg sync.WaitGroup
	var conns []net.Conn
	for range idle {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != nil {
				if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
					closed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	if got := closed.Load(); got < idle-maxConnections {
		t.Errorf("the server closed %d of %d idle connections within 5s; want all but at most %d", got, idle, maxConnections)
	}
	// And with the socket flooded again, a real command gets through.
	var again []net.Conn
	for range idle {
		if c, err := net.Dial("unix", sock); err == nil {
			again = append(again, c)
		}
	}
	defer func() {
		for _, c := range again {
			c.Close()
		}
	}()
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	if r, err := Call(cctx, sock, command.Request{ID: "1", Name: "echo"}); err != nil || r.Status != command.Successful {
		t.Fatalf("a command while %d idle connections are open: %+v %v", idle, r, err)
	}
}
