package mllp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hl7edge/hl7edge/pipeline/health"
	"github.com/hl7edge/hl7edge/pipeline/ratelog"
)

// Handler answers one frame. It returns the HL7 acknowledgement to write
// back (framed by the server), or nil to write nothing. Calls for one
// connection are strictly sequential, in arrival order; calls for different
// connections run concurrently.
//
// ctx is not cancelled when the server shuts down: a message being handled
// then is finished and acknowledged, so the handler must bound its own time.
type Handler interface {
	HandleFrame(ctx context.Context, peer string, f Frame) []byte
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, peer string, f Frame) []byte

// HandleFrame calls f.
func (f HandlerFunc) HandleFrame(ctx context.Context, peer string, fr Frame) []byte {
	return f(ctx, peer, fr)
}

// Server is one MLLP listener.
type Server struct {
	name string
	cfg  ListenerConfig
	h    Handler
	log  *slog.Logger
	comp *health.Component
	tls  *tls.Config

	started atomic.Bool
	addr    atomic.Pointer[net.Addr]
	open    atomic.Int64

	// The admission table: every admitted connection, and how many each
	// peer address holds.
	mu      sync.Mutex
	conns   map[*conn]struct{}
	perPeer map[string]int
	// senders are the addresses that have delivered a complete frame:
	// their idle connections give way only after strangers' do.
	senders map[string]struct{}
}

// maxKnownSenders bounds the senders table; when full it starts over.
const maxKnownSenders = 4096

// conn is one admitted connection as the admission table sees it.
type conn struct {
	raw    net.Conn // the TCP connection under any TLS, closed to evict
	ip     string
	opened time.Time
	framed atomic.Bool // a complete frame has arrived: it is a sender, never evicted
	// evicted is set, under Server.mu, when it was closed to make room.
	evicted atomic.Bool
}

// NewServer checks cfg (after applying defaults to a copy) and loads its
// TLS files. comp receives state and counters.
func NewServer(name string, cfg ListenerConfig, h Handler, log *slog.Logger, comp *health.Component) (*Server, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("source %q: %w", name, err)
	}
	if h == nil || log == nil || comp == nil {
		return nil, fmt.Errorf("mllp source %q: handler, logger and health component are all required", name)
	}
	tlsConf, err := cfg.TLS.serverTLSConfig()
	if err != nil {
		return nil, fmt.Errorf("mllp source %q: %w", name, err)
	}
	// Everything a peer can make it log per connection goes through one
	// rate limit, so a flood costs a few lines a second.
	log = ratelog.Logger(log.With("source", name), time.Second, 5)
	return &Server{name: name, cfg: cfg, h: h, log: log, comp: comp, tls: tlsConf,
		conns: map[*conn]struct{}{}, perPeer: map[string]int{}, senders: map[string]struct{}{}}, nil
}

// Addr is the listening address once Serve or Run has started, else nil.
func (s *Server) Addr() net.Addr {
	if a := s.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Connections is the number of connections open now.
func (s *Server) Connections() int { return int(s.open.Load()) }

// Run listens on cfg.Listen and serves until ctx is cancelled.
func (s *Server) Run(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		err = fmt.Errorf("mllp source %q: listen on %s: %w (is another program using the port, or is the address not on this box?)", s.name, s.cfg.Listen, err)
		s.comp.Fail(health.Down, err.Error())
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve accepts connections on ln (wrapping it in TLS when the config has
// TLS) until ctx is cancelled, then stops accepting, lets handler calls in
// flight finish and write their ACKs, closes every connection and returns
// nil. It returns an error only if accepting fails for good. Serve takes
// ownership of ln and may be called once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.started.CompareAndSwap(false, true) {
		ln.Close()
		return fmt.Errorf("mllp source %q: Serve called twice: make a new Server", s.name)
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	a := ln.Addr()
	s.addr.Store(&a)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()

	s.log.Info("MLLP listener up", "addr", a.String(), "tls", s.tls != nil,
		"client_certs", s.tls != nil && s.tls.ClientAuth == tls.RequireAndVerifyClientCert)
	s.comp.SetState(health.Up)

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				s.log.Info("MLLP listener stopping", "open_connections", s.open.Load())
				s.comp.SetState(health.Stopped)
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				err = fmt.Errorf("mllp source %q: listener on %s closed unexpectedly: %w", s.name, a, err)
				s.comp.Fail(health.Down, err.Error())
				return err
			}
			// Typically out of file descriptors: back off and let
			// connections end rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("MLLP accept failed; retrying", "err", err, "retry_in", backoff)
			s.comp.Fail("", fmt.Sprintf("accept on %s: %v", a, err))
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
			continue
		}
		backoff = 0
		cs, ok := s.admit(c)
		if !ok {
			c.Close()
			continue
		}
		s.open.Add(1)
		s.comp.Add(health.CounterConnectionsTotal, 1)
		wg.Go(func() {
			defer func() {
				s.release(cs)
				s.open.Add(-1)
				s.comp.Add(health.CounterConnectionsClosed, 1)
			}()
			s.serveConn(ctx, c, cs)
		})
	}
}

// admit enters a new connection in the admission table, or says no. A
// peer address at max_connections_per_peer is refused unless one of its own
// connections can give way (as below). When the listener
// is full, the connection that has waited longest without sending a
// complete frame is closed to make room: an idle flood then costs real
// senders, who connect to send, nothing. Only when every slot holds a
// connection that has sent a frame is the newcomer refused.
func (s *Server) admit(c net.Conn) (*conn, bool) {
	raw := c
	if tc, ok := c.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	ip := peerIP(c.RemoteAddr())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perPeer[ip] >= s.cfg.MaxConnectionsPerPeer {
		// The address may replace its own idle connections, no one else's.
		victim := s.longestWaitingUnframed(ip)
		if victim == nil {
			s.comp.Add(health.CounterRefusedPerPeer, 1)
			s.log.Warn("MLLP connection refused: max_connections_per_peer reached for this address",
				"peer", ip, "max_connections_per_peer", s.cfg.MaxConnectionsPerPeer)
			return nil, false
		}
		s.evictLocked(victim)
	}
	if len(s.conns) >= s.cfg.MaxConnections {
		victim := s.longestWaitingUnframed("")
		if victim == nil {
			s.comp.Add(health.CounterRefusedConnections, 1)
			s.log.Warn("MLLP connection refused: max_connections reached and every connection has sent a frame; raise max_connections or find the sender that leaks connections",
				"peer", ip, "max_connections", s.cfg.MaxConnections)
			return nil, false
		}
		s.evictLocked(victim)
	}
	cs := &conn{raw: raw, ip: ip, opened: time.Now()}
	s.conns[cs] = struct{}{}
	s.perPeer[ip]++
	return cs, true
}

// longestWaitingUnframed is the oldest connection that has sent nothing
// yet: no complete frame, and no bytes waiting in its socket (a sender
// whose frame has arrived but not been read yet is not idle). Connections
// from addresses that have sent frames before go last: a sender's new
// connection may not have written yet when a burst arrives. nil when
// there is none. ip, when set, limits the choice to that address. The
// table holds at most max_connections.
func (s *Server) longestWaitingUnframed(ip string) *conn {
	// Usually the first pick has nothing waiting in its socket: one scan
	// and one system call per admission, not a sort, because the accept
	// loop runs this for every connection of a flood.
	var skip map[*conn]bool
	for {
		var victim *conn
		var victimKnown bool
		for c := range s.conns {
			if c.framed.Load() || (ip != "" && c.ip != ip) || skip[c] {
				continue
			}
			_, known := s.senders[c.ip]
			// Strangers first, then addresses that have sent before; oldest first.
			if victim == nil || (!known && victimKnown) || (known == victimKnown && c.opened.Before(victim.opened)) {
				victim, victimKnown = c, known
			}
		}
		if victim == nil || !pending(victim.raw) {
			return victim
		}
		if skip == nil {
			skip = map[*conn]bool{}
		}
		skip[victim] = true
	}
}

// pending reports whether bytes wait unread in c's socket.
func pending(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
}

// evictLocked closes victim and frees its slot at once, so the newcomer
// takes it; its goroutine sees the closed socket and ends.
func (s *Server) evictLocked(victim *conn) {
	victim.evicted.Store(true)
	s.forgetLocked(victim)
	_ = victim.raw.Close()
	s.comp.Add(health.CounterEvicted, 1)
	s.log.Warn("MLLP connection closed to make room: max_connections reached and it had sent no complete frame",
		"peer", victim.ip, "waited", time.Since(victim.opened).Round(time.Millisecond), "max_connections", s.cfg.MaxConnections)
}

func (s *Server) forgetLocked(c *conn) {
	if _, ok := s.conns[c]; !ok {
		return
	}
	delete(s.conns, c)
	if s.perPeer[c.ip]--; s.perPeer[c.ip] <= 0 {
		delete(s.perPeer, c.ip)
	}
}

// knownSender records that ip has delivered a frame.
func (s *Server) knownSender(ip string) {
	s.mu.Lock()
	if len(s.senders) >= maxKnownSenders {
		clear(s.senders)
	}
	s.senders[ip] = struct{}{}
	s.mu.Unlock()
}

// release takes an ended connection out of the table (a no-op if it was evicted).
func (s *Server) release(c *conn) {
	s.mu.Lock()
	s.forgetLocked(c)
	s.mu.Unlock()
}

// peerIP is the address a per-peer limit counts: the IP without the port.
func peerIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

// aLongTimeAgo is a deadline in the past, used to wake a blocked Read.
var aLongTimeAgo = time.Unix(1, 0)

func (s *Server) serveConn(ctx context.Context, c net.Conn, cs *conn) {
	defer c.Close()
	peer := c.RemoteAddr().String()
	log := s.log.With("peer", peer)
	idle := s.cfg.IdleTimeout.D()
	first := s.cfg.FirstFrameTimeout.D()

	// Shutdown wakes a connection blocked waiting for a frame; a frame
	// being handled is finished first because the handler does not read.
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(aLongTimeAgo) })
	defer stop()

	if tc, ok := c.(*tls.Conn); ok {
		hctx, cancel := context.WithTimeout(ctx, first)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil && !cs.evicted.Load() {
				s.comp.Add(health.CounterTLSFailures, 1)
				log.Warn("MLLP TLS handshake failed; connection closed", "err", err)
			}
			return
		}
	}
	log.Debug("MLLP connection open")

	hctx := context.WithoutCancel(ctx)
	r := NewReader(c, int(s.cfg.MaxMessageBytes))
	var skipped int64
	countSkipped := func() {
		if n := r.Skipped() - skipped; n > 0 {
			s.comp.Add(health.CounterGarbageBytes, uint64(n))
			skipped += n
		}
	}
	defer countSkipped()
	for {
		// "Idle" is measured from the last complete frame: a peer that
		// trickles a frame for longer than idle_timeout is as stuck as
		// one that sends nothing. The first frame has a shorter limit.
		wait := idle
		if !cs.framed.Load() {
			wait = first
		}
		c.SetReadDeadline(time.Now().Add(wait))
		if ctx.Err() != nil { // checked after setting: see AfterFunc above
			log.Debug("MLLP connection closed for shutdown")
			return
		}
		f, err := r.ReadFrame()
		countSkipped()
		if err != nil {
			s.connEnded(ctx, log, err, cs)
			return
		}
		if !cs.framed.Swap(true) {
			s.knownSender(cs.ip)
		}
		s.comp.Add(health.CounterFrames, 1)
		if f.Oversize {
			s.comp.Add(health.CounterOversize, 1)
			log.Warn("MLLP frame over max_message_bytes; handler sees its beginning only",
				"size", f.Size, "max_message_bytes", int64(s.cfg.MaxMessageBytes))
		}
		ack := s.h.HandleFrame(hctx, peer, f)
		if ack == nil {
			continue
		}
		c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout.D()))
		if err := WriteFrame(c, ack); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				s.comp.Add(health.CounterWriteTimeouts, 1)
				log.Warn("MLLP peer did not take its ACK within write_timeout; connection closed",
					"write_timeout", s.cfg.WriteTimeout.D())
			} else {
				log.Warn("MLLP writing ACK failed; connection closed", "err", err)
			}
			return
		}
	}
}

// connEnded logs why a connection's read loop ended.
func (s *Server) connEnded(ctx context.Context, log *slog.Logger, err error, cs *conn) {
	switch {
	case ctx.Err() != nil:
		log.Debug("MLLP connection closed for shutdown")
	case cs.evicted.Load():
		// Counted and logged when it was closed.
	case errors.Is(err, os.ErrDeadlineExceeded) && !cs.framed.Load():
		s.comp.Add(health.CounterFirstFrameTimeouts, 1)
		log.Info("MLLP connection closed: no complete frame within first_frame_timeout", "first_frame_timeout", s.cfg.FirstFrameTimeout.D())
	case errors.Is(err, io.EOF):
		log.Debug("MLLP connection closed by peer")
	case errors.Is(err, io.ErrUnexpectedEOF):
		log.Warn("MLLP peer closed the connection in the middle of a frame", "err", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.comp.Add(health.CounterIdleClosed, 1)
		log.Info("MLLP connection closed: no complete frame within idle_timeout", "idle_timeout", s.cfg.IdleTimeout.D())
	default:
		log.Warn("MLLP connection failed", "err", err)
	}
}
