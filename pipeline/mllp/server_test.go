package mllp

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

func TestServerAcksInOrderPerConnection(t *testing.T) {
	const conns, msgs = 8, 100
	var inFlight sync.Map // peer -> *atomic.Int32
	var overlap atomic.Bool
	var calls atomic.Int64
	ts := startServer(t, ListenerConfig{}, HandlerFunc(func(ctx context.Context, peer string, f Frame) []byte {
		n, _ := inFlight.LoadOrStore(peer, new(atomic.Int32))
		if n.(*atomic.Int32).Add(1) != 1 {
			overlap.Store(true)
		}
		defer n.(*atomic.Int32).Add(-1)
		calls.Add(1)
		if len(f.Data)%3 == 0 {
			runtime.Gosched() // vary timing between connections
		}
		return echo(ctx, peer, f)
	}))
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := range conns {
		wg.Go(func() {
			rc := dialRaw(t, ts.addr())
			// Pipeline every message before reading any ACK: the server
			// must still answer them one by one, in order.
			var out bytes.Buffer
			for i := range msgs {
				if err := WriteFrame(&out, fmt.Appendf(nil, "conn%d msg%d", c, i)); err != nil {
					errs <- err
					return
				}
			}
			if _, err := rc.Write(out.Bytes()); err != nil {
				errs <- err
				return
			}
			rc.SetReadDeadline(time.Now().Add(20 * time.Second))
			for i := range msgs {
				f, err := rc.r.ReadFrame()
				if err != nil {
					errs <- fmt.Errorf("conn %d ack %d: %w", c, i, err)
					return
				}
				if want := fmt.Sprintf("ACK:conn%d msg%d", c, i); string(f.Data) != want {
					errs <- fmt.Errorf("conn %d: ack %d = %q, want %q", c, i, f.Data, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if overlap.Load() {
		t.Error("two frames of one connection were handled at the same time")
	}
	if calls.Load() != conns*msgs || ts.comp.Counter(health.CounterFrames) != conns*msgs {
		t.Errorf("handler calls %d, frames counter %d, want %d", calls.Load(), ts.comp.Counter(health.CounterFrames), conns*msgs)
	}
	if got := ts.comp.Counter(health.CounterConnectionsTotal); got != conns {
		t.Errorf("connections_total = %d, want %d", got, conns)
	}
}

func TestServerConnectionsAreConcurrent(t *testing.T) {
	bHandled := make(chan struct{})
	ts := startServer(t, ListenerConfig{}, HandlerFunc(func(ctx context.Context, peer string, f Frame) []byte {
		switch string(f.Data) {
		case "A":
			// Holds connection A until B has been handled: only
			// possible if connections are served concurrently.
			select {
			case <-bHandled:
			case <-time.After(10 * time.Second):
				return []byte("A timed out: connections are serialised")
			}
		case "B":
			close(bHandled)
		}
		return echo(ctx, peer, f)
	}))
	a, b := dialRaw(t, ts.addr()), dialRaw(t, ts.addr())
	a.send(t, "A")
	b.send(t, "B")
	b.expect(t, "ACK:B")
	a.expect(t, "ACK:A")
}

func TestServerNilAnswerWritesNothing(t *testing.T) {
	ts := startServer(t, ListenerConfig{}, HandlerFunc(func(ctx context.Context, peer string, f Frame) []byte {
		if string(f.Data) == "quiet" {
			return nil
		}
		return echo(ctx, peer, f)
	}))
	c := dialRaw(t, ts.addr())
	c.send(t, "quiet")
	c.send(t, "loud")
	c.expect(t, "ACK:loud")
}

// Not parallel: it measures allocation, which is process-wide.
func TestServerOversizeFrameStreamedWhileOthersServed(t *testing.T) {
	const limit = 64 << 10
	const total = 100 << 20
	head := "MSH|^~\\&|BIG|H|EHR|H|20240101||ORU^R01|big1|P|2.5\r"
	var sawOversize atomic.Pointer[Frame]
	ts := startServer(t, ListenerConfig{MaxMessageBytes: limit}, HandlerFunc(func(ctx context.Context, peer string, f Frame) []byte {
		if f.Oversize {
			sawOversize.Store(&f)
			return []byte("AR too big")
		}
		return echo(ctx, peer, f)
	}))
	good := dialRaw(t, ts.addr())
	big := dialRaw(t, ts.addr())

	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	chunk := bytes.Repeat([]byte("0123456789abcdef"), (1<<20)/16)
	big.write(t, "\x0b"+head)
	sent := len(head)
	writeChunks := func(upTo int) {
		for sent < upTo {
			n := min(len(chunk), upTo-sent)
			big.SetWriteDeadline(time.Now().Add(20 * time.Second))
			if _, err := big.Write(chunk[:n]); err != nil {
				t.Fatal(err)
			}
			sent += n
		}
	}
	writeChunks(total / 2)
	// Halfway through the big frame, another connection is answered.
	for i := range 10 {
		good.send(t, fmt.Sprintf("small %d", i))
		good.expect(t, fmt.Sprintf("ACK:small %d", i))
	}
	writeChunks(total)
	big.write(t, "\x1c\r")
	big.expect(t, "AR too big")

	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	// The test itself allocates about 1 MiB; the server may hold one
	// limit-sized buffer and read buffers. Reading 100 MiB into memory
	// would allocate more than 100 MiB.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("streaming a %d-byte frame allocated %d bytes; memory must stay bounded by max_message_bytes", total, grew)
	}
	f := sawOversize.Load()
	if f == nil {
		t.Fatal("handler never saw the oversize frame")
	}
	if f.Size != total || len(f.Data) != limit || !bytes.HasPrefix(f.Data, []byte(head)) {
		t.Errorf("oversize frame: size %d len %d prefix ok %v; want size %d len %d starting with MSH",
			f.Size, len(f.Data), bytes.HasPrefix(f.Data, []byte(head)), total, limit)
	}
	// The connection is still in sync for the next frame.
	big.send(t, "after")
	big.expect(t, "ACK:after")
	if got := ts.comp.Counter(health.CounterOversize); got != 1 {
		t.Errorf("oversize counter = %d, want 1", got)
	}
}

func TestServerSkipsGarbage(t *testing.T) {
	ts := startServer(t, ListenerConfig{}, HandlerFunc(echo))
	c := dialRaw(t, ts.addr())
	c.write(t, "hello\r\n"+frame("one")+"xx"+frame("two")+"\r\n")
	c.expect(t, "ACK:one")
	c.expect(t, "ACK:two")
	c.send(t, "three")
	c.expect(t, "ACK:three")
	// "hello\r\n" (7) + "xx" (2) + the "\r\n" after the second frame's own CR (2)
	if got := ts.comp.Counter(health.CounterGarbageBytes); got != 11 {
		t.Errorf("garbage_bytes = %d, want 11", got)
	}
}

func TestServerClosesHalfOpenConnectionAfterIdleTimeout(t *testing.T) {
	t.Parallel()
	// Generous: the busy connection must never look idle, even on a loaded machine.
	const idle = 1500 * time.Millisecond
	var calls atomic.Int64
	ts := startServer(t, ListenerConfig{IdleTimeout: units.Duration(idle)}, HandlerFunc(func(ctx context.Context, peer string, f Frame) []byte {
		calls.Add(1)
		return echo(ctx, peer, f)
	}))
	// A busy connection whose gaps are all shorter than idle_timeout
	// outlives it.
	busy := dialRaw(t, ts.addr())
	half := dialRaw(t, ts.addr())
	half.send(t, "first")
	half.expect(t, "ACK:first")
	start := time.Now()
	half.write(t, "\x0bMSH|^~\\&|half a fra")
	for i := 0; time.Since(start) < 2*idle; i++ {
		busy.send(t, fmt.Sprint(i))
		busy.expect(t, fmt.Sprint("ACK:", i))
		time.Sleep(idle / 10)
	}
	half.expectClosed(t)
	if waited := time.Since(start); waited < idle {
		t.Errorf("closed after %v, before idle_timeout %v", waited, idle)
	}
	busy.send(t, "still here")
	busy.expect(t, "ACK:still here")
	if got := ts.comp.Counter(health.CounterIdleClosed); got != 1 {
		t.Errorf("idle_closed = %d, want 1", got)
	}
	if ts.Connections() != 1 {
		t.Errorf("Connections() = %d, want 1", ts.Connections())
	}
	// A connection that sends nothing at all goes too, after
	// first_frame_timeout (here idle_timeout, which bounds it).
	busy.Close() // a clean close, not counted as idle
	quiet := dialRaw(t, ts.addr())
	quiet.expectClosed(t)
	waitFor(t, "first-frame timeout counted", func() bool { return ts.comp.Counter(health.CounterFirstFrameTimeouts) == 1 })
}

func TestServerWriteTimeoutFreesConnection(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("ACK "), (32<<20)/4) // more than socket buffers hold
	ts := startServer(t, ListenerConfig{WriteTimeout: units.Duration(200 * time.Millisecond)},
		HandlerFunc(func(context.Context, string, Frame) []byte { return big }))
	c := dialRaw(t, ts.addr())
	c.send(t, "MSH|give me a huge ack") // and never read it
	waitFor(t, "write timeout", func() bool { return ts.comp.Counter(health.CounterWriteTimeouts) == 1 })
	waitFor(t, "connection released", func() bool { return ts.Connections() == 0 })
}

// raiseFileLimit makes room for n more descriptors if the hard limit
// allows and returns how many the test may use.
func raiseFileLimit(t *testing.T, n uint64) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Logf("getrlimit: %v", err)
		return n
	}
	need := n + 256 // other tests and the runtime
	if lim.Cur < need {
		lim.Cur = min(need, lim.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Logf("setrlimit: %v", err)
		}
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if lim.Cur < need {
		return lim.Cur - 256
	}
	return n
}

// TestServerMaxConnections: with the listener full, each new connection
// takes the slot of the oldest one that has sent nothing, so connections
// that have had a message accepted keep theirs; once every slot holds one,
// a newcomer from an address with nothing accepted is refused. Both are counted and logged rate-limited.
func TestServerMaxConnections(t *testing.T) {
	t.Parallel()
	const maxConns, senders = 64, 10
	total := 1000
	// Each test connection costs two descriptors in this process.
	if allowed := raiseFileLimit(t, uint64(2*total)); allowed < uint64(2*total) {
		total = int(allowed / 2)
		t.Logf("RLIMIT_NOFILE allows only %d connections; testing with that many", total)
		if total <= maxConns+10 {
			t.Skip("too few file descriptors for this test")
		}
	}
	start := time.Now()
	ts := startServer(t, ListenerConfig{MaxConnections: maxConns, MaxConnectionsPerPeer: maxConns}, HandlerFunc(verdict))
	var active []*rawConn
	for i := range senders {
		c := dialRaw(t, ts.addr())
		c.send(t, hl7Msg(fmt.Sprint("before", i)))
		c.expectACK(t, "AA", fmt.Sprint("before", i))
		active = append(active, c)
	}
	idle := make([]*rawConn, 0, total-senders)
	for range total - senders {
		idle = append(idle, dialRaw(t, ts.addr()))
	}
	wantEvicted := uint64(total - maxConns)
	waitFor(t, "evictions counted", func() bool { return ts.comp.Counter(health.CounterEvicted) == wantEvicted })
	if got := ts.comp.Counter(health.CounterRefusedConnections); got != 0 {
		t.Errorf("refused_connections = %d, want 0 while idle connections can give way", got)
	}
	waitFor(t, "evicted connections released", func() bool { return ts.Connections() == maxConns })
	// The oldest idle connections were closed; the newest are open.
	var closed, open atomic.Int64
	var wg sync.WaitGroup
	for _, c := range idle {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			switch {
			case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
				closed.Add(1)
			case errors.As(err, &ne) && ne.Timeout():
				open.Add(1)
			default:
				t.Errorf("unexpected read result: %v", err)
			}
		})
	}
	wg.Wait()
	if closed.Load() != int64(wantEvicted) || open.Load() != maxConns-senders {
		t.Errorf("%d idle connections closed and %d open; want %d and %d", closed.Load(), open.Load(), wantEvicted, maxConns-senders)
	}
	for i, c := range active {
		c.send(t, hl7Msg(fmt.Sprint("after", i)))
		c.expectACK(t, "AA", fmt.Sprint("after", i))
	}
	// Fill every slot with a sender: now a newcomer is refused.
	for _, c := range idle[len(idle)-(maxConns-senders):] {
		c.send(t, hl7Msg("now a sender"))
		c.expectACK(t, "AA", "now a sender")
	}
	// (From another address: this one is also at max_connections_per_peer.)
	lc, err := dialFrom(context.Background(), "127.0.3.1", ts.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	(&rawConn{Conn: lc, r: NewReader(lc, 0)}).expectClosed(t)
	if got := ts.comp.Counter(health.CounterRefusedConnections); got != 1 {
		t.Errorf("refused_connections = %d, want 1", got)
	}
	// ratelog: at most 5 lines a second of each kind.
	secs := int(time.Since(start)/time.Second) + 1
	if n := strings.Count(ts.logs.String(), "to make room"); n < 1 || n > 5*secs {
		t.Errorf("%d log lines about evictions in %ds; want at most 5 a second", n, secs)
	}
}

func TestServerTLSRequiresClientCert(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := throwawayca.NewCA("mllp test CA")
	if err != nil {
		t.Fatal(err)
	}
	srvLeaf, err := ca.Issue("server", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	files, err := ca.WriteFiles(dir, "server", srvLeaf)
	if err != nil {
		t.Fatal(err)
	}
	clientLeaf, err := ca.Issue("good client")
	if err != nil {
		t.Fatal(err)
	}
	other, err := throwawayca.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	strangerLeaf, err := other.Issue("stranger")
	if err != nil {
		t.Fatal(err)
	}

	var calls atomic.Int64
	ts := startServer(t, ListenerConfig{TLS: ServerTLS{CertFile: files.Cert, KeyFile: files.Key, ClientCAFile: files.CA}},
		HandlerFunc(func(ctx context.Context, peer string, f Frame) []byte {
			calls.Add(1)
			return echo(ctx, peer, f)
		}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	send := func(conf *tls.Config) ([]byte, error) {
		c, err := Dial(ctx, ts.addr(), conf)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return c.Send(ctx, []byte("MSH|hello"))
	}
	ack, err := send(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{clientLeaf.TLS}})
	if err != nil || string(ack) != "ACK:MSH|hello" {
		t.Fatalf("client with a good certificate: %q, %v", ack, err)
	}
	for name, conf := range map[string]*tls.Config{
		"no client cert":          {RootCAs: ca.Pool()},
		"cert from another CA":    {RootCAs: ca.Pool(), Certificates: []tls.Certificate{strangerLeaf.TLS}},
		"server not trusted":      {RootCAs: other.Pool(), Certificates: []tls.Certificate{clientLeaf.TLS}},
		"server name mismatching": {RootCAs: ca.Pool(), Certificates: []tls.Certificate{clientLeaf.TLS}, ServerName: "elsewhere"},
	} {
		if ack, err := send(conf); err == nil {
			t.Errorf("%s: got ACK %q, want refusal", name, ack)
		}
	}
	// Plain MLLP against the TLS port gets nothing handled.
	c, err := Dial(ctx, ts.addr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ack, err := c.Send(ctx, []byte("MSH|plain")); err == nil {
		t.Errorf("plain TCP client got %q, want refusal", ack)
	}
	c.Close()
	if calls.Load() != 1 {
		t.Errorf("handler called %d times, want 1 (only the good client)", calls.Load())
	}
	// Handshakes the server refused: no cert, foreign cert, plain TCP
	// (the client-side refusals may or may not reach the server).
	waitFor(t, "tls failures counted", func() bool { return ts.comp.Counter(health.CounterTLSFailures) >= 3 })
}

func TestServerShutdown(t *testing.T) {
	baseline := runtime.NumGoroutine()
	entered, release := make(chan struct{}), make(chan struct{})
	ts := startServer(t, ListenerConfig{}, HandlerFunc(func(ctx context.Context, peer string, f Frame) []byte {
		if string(f.Data) == "slow" {
			close(entered)
			<-release
			if ctx.Err() != nil {
				return []byte("handler context was cancelled")
			}
		}
		return echo(ctx, peer, f)
	}))
	idle := dialRaw(t, ts.addr())
	partial := dialRaw(t, ts.addr())
	busy := dialRaw(t, ts.addr())
	idle.send(t, "hi")
	idle.expect(t, "ACK:hi")
	partial.write(t, "\x0bMSH|partial")
	busy.send(t, "slow")
	<-entered

	ts.cancel()
	// Waiting connections close at once, while the handler in flight
	// is still running.
	idle.expectClosed(t)
	partial.expectClosed(t)
	select {
	case <-ts.done:
		t.Fatal("Serve returned while a handler was still running")
	default:
	}
	waitFor(t, "listener closed", func() bool {
		c, err := net.DialTimeout("tcp", ts.addr(), time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(release)
	busy.expect(t, "ACK:slow") // the in-flight message is acknowledged
	busy.expectClosed(t)
	ts.stop(t)
	if s := ts.comp.State(); s != health.Stopped {
		t.Errorf("state after stop = %s, want %s", s, health.Stopped)
	}
	waitFor(t, "server goroutines gone", func() bool {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		return !strings.Contains(stacks, "mllp.(*Server)") && runtime.NumGoroutine() <= baseline
	})
}

func TestServerServeTwice(t *testing.T) {
	ts := startServer(t, ListenerConfig{}, HandlerFunc(echo))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Serve(context.Background(), ln); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("second Serve = %v, want an error saying so", err)
	}
}

func TestServerRunPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	comp := health.NewRegistry("t", "v", nil).Component(health.Source, "x", "mllp")
	s, err := NewServer("x", ListenerConfig{Listen: ln.Addr().String()}, HandlerFunc(echo), discardLogger(), comp)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("Run on a busy port = %v, want an error naming the address", err)
	}
	if comp.State() != health.Down {
		t.Errorf("state = %s, want down", comp.State())
	}
}
