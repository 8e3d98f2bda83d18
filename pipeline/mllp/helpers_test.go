package mllp

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/logtest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// testServer is a Server serving on 127.0.0.1:0 for one test.
type testServer struct {
	*Server
	comp   *health.Component
	cancel context.CancelFunc
	done   chan error
	logs   *logtest.Buffer

	stopOnce sync.Once
}

// startServer starts a server with cfg (Listen defaults to 127.0.0.1:0)
// and stops it when the test ends.
func startServer(t testing.TB, cfg ListenerConfig, h Handler) *testServer {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	logs := &logtest.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	comp := health.NewRegistry("test", "v0", nil).Component(health.Source, "mllp-test", "mllp")
	s, err := NewServer("mllp-test", cfg, h, log, comp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: s, comp: comp, cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { ts.done <- s.Run(ctx) }()
	waitFor(t, "server listening", func() bool { return s.Addr() != nil && comp.State() == health.Up })
	t.Cleanup(func() {
		ts.stop(t)
		// Whatever a test did, logs must never carry message content.
		if bytes.Contains(logs.Bytes(), []byte("MSH|")) || bytes.Contains(logs.Bytes(), []byte("PID|")) {
			t.Errorf("server logs hold message content:\n%s", logs.Bytes())
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.Bytes())
		}
	})
	return ts
}

// stop cancels the server and waits for Serve to return.
func (ts *testServer) stop(t testing.TB) {
	t.Helper()
	ts.cancel()
	ts.stopOnce.Do(func() {
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("server did not stop within 10s of cancel")
		}
	})
}

func (ts *testServer) addr() string { return ts.Addr().String() }

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// echo answers "ACK:" + the frame content.
func echo(_ context.Context, _ string, f Frame) []byte {
	return append([]byte("ACK:"), f.Data...)
}

// rawConn is a plain TCP test peer with a frame reader.
type rawConn struct {
	net.Conn
	r *Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c, r: NewReader(c, 0)}
}

func (c *rawConn) send(t testing.TB, s string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := WriteFrame(c, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

func (c *rawConn) write(t testing.TB, s string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func (c *rawConn) expect(t testing.TB, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := c.r.ReadFrame()
	if err != nil {
		t.Fatalf("waiting for %q: %v", want, err)
	}
	if string(f.Data) != want {
		t.Fatalf("got %q, want %q", f.Data, want)
	}
}

// expectACK reads an HL7 acknowledgement and checks MSA-1 and MSA-2.
func (c *rawConn) expectACK(t testing.TB, code, acked string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := c.r.ReadFrame()
	if err != nil {
		t.Fatalf("waiting for %s of %q: %v", code, acked, err)
	}
	if gotCode, gotAcked, _, err := hl7.ParseACK(f.Data); err != nil || gotCode != code || gotAcked != acked {
		t.Fatalf("got %s of %q (err %v), want %s of %q", gotCode, gotAcked, err, code, acked)
	}
}

// expectClosed waits for the server to close the connection.
func (c *rawConn) expectClosed(t testing.TB) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := c.r.ReadFrame()
	if err == nil {
		t.Fatalf("got frame %q, want the connection closed", f.Data)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after 10s: %v", err)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
