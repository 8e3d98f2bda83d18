package mllp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// silentPeer accepts connections and reads them but never answers. It
// returns its address and a count of the bytes it has read.
func silentPeer(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
		read  atomic.Int64
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					read.Add(int64(n))
					if err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String(), &read
}

func TestClientSendReceivesAcksInOrder(t *testing.T) {
	ts := startServer(t, ListenerConfig{}, HandlerFunc(echo))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, ts.addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range []string{"MSH|1", "MSH|2", "MSH|3"} {
		ack, err := c.Send(ctx, []byte(m))
		if err != nil || string(ack) != "ACK:"+m {
			t.Fatalf("Send(%q) = %q, %v", m, ack, err)
		}
	}
	if _, err := c.Send(ctx, []byte("bad\x1cbyte")); !errors.Is(err, ErrFramingByte) {
		t.Fatalf("Send with a framing byte = %v, want ErrFramingByte", err)
	}
	// Nothing was written, so the connection is still good.
	if ack, err := c.Send(ctx, []byte("MSH|4")); err != nil || string(ack) != "ACK:MSH|4" {
		t.Fatalf("Send after a refused message = %q, %v", ack, err)
	}
}

func TestClientSendHonoursDeadline(t *testing.T) {
	addr, _ := silentPeer(t)
	c, err := Dial(context.Background(), addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Send(ctx, []byte("MSH|PATIENT-SECRET"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send = %v, want DeadlineExceeded", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("Send returned after %v, long past its deadline", time.Since(start))
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("error holds message content: %v", err)
	}
	// A late ACK must never be taken for the next message's.
	if _, err := c.Send(context.Background(), []byte("MSH|next")); !errors.Is(err, ErrBroken) {
		t.Fatalf("Send after a timeout = %v, want ErrBroken", err)
	}
}

func TestClientSendCancelAndClose(t *testing.T) {
	addr, read := silentPeer(t)
	for _, how := range []string{"cancel", "close"} {
		t.Run(how, func(t *testing.T) {
			c, err := Dial(context.Background(), addr, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			// Once the peer has the frame, Send is waiting for the ACK.
			before := read.Load()
			go func() {
				_, err := c.Send(ctx, []byte("MSH|x"))
				done <- err
			}()
			waitFor(t, "frame at the peer", func() bool { return read.Load() >= before+int64(len(frame("MSH|x"))) })
			if how == "cancel" {
				cancel()
			} else {
				c.Close()
			}
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("Send succeeded against a silent peer")
				}
				if how == "cancel" && !errors.Is(err, context.Canceled) {
					t.Errorf("Send = %v, want context.Canceled", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("Send still blocked 10s after %s", how)
			}
			if _, err := c.Send(context.Background(), []byte("MSH|y")); err == nil {
				t.Error("Send on an interrupted client succeeded")
			}
		})
	}
}

func TestClientPeerClosesWithoutAck(t *testing.T) {
	ts := startServer(t, ListenerConfig{}, HandlerFunc(func(context.Context, string, Frame) []byte { return nil }))
	c, err := Dial(context.Background(), ts.addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() {
		_, err := c.Send(context.Background(), []byte("MSH|unanswered"))
		done <- err
	}()
	// The server handles the frame, answers nothing, then shuts down
	// and closes the connection: Send must return, with an error.
	waitFor(t, "frame handled", func() bool { return ts.comp.Counter(health.CounterFrames) == 1 })
	ts.stop(t)
	select {
	case err := <-done:
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("Send = %v, want an EOF error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Send still blocked 10s after the peer closed")
	}
}

func TestClientTLS(t *testing.T) {
	if _, err := Dial(context.Background(), "127.0.0.1:1", &tls.Config{InsecureSkipVerify: true}); err == nil || !strings.Contains(err.Error(), "InsecureSkipVerify") {
		t.Fatalf("Dial with InsecureSkipVerify = %v, want refusal naming it", err)
	}
	ca, err := throwawayca.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("server", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	files, err := ca.WriteFiles(t.TempDir(), "s", leaf)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, ListenerConfig{TLS: ServerTLS{CertFile: files.Cert, KeyFile: files.Key}}, HandlerFunc(echo))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conf := &tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS12}
	c, err := Dial(ctx, ts.addr(), conf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ack, err := c.Send(ctx, []byte("MSH|tls")); err != nil || string(ack) != "ACK:MSH|tls" {
		t.Fatalf("Send over TLS 1.2 = %q, %v", ack, err)
	}
	if conf.MinVersion != 0 {
		t.Error("Dial modified the caller's tls.Config")
	}
}
