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
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/ratelog"
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
	// credit is when each address last had a message accepted: the only
	// standing an address can have (admission.go).
	credit map[string]time.Time
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
		conns: map[*conn]struct{}{}, perPeer: map[string]int{}, credit: map[string]time.Time{}}, nil
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
		s.comp.Add(health.CounterFrames, 1)
		if f.Oversize {
			s.comp.Add(health.CounterOversize, 1)
			log.Warn("MLLP frame over max_message_bytes; handler sees its beginning only",
				"size", f.Size, "max_message_bytes", int64(s.cfg.MaxMessageBytes))
		}
		if !s.answer(hctx, c, cs, log, peer, f) {
			return
		}
	}
}

// answer hands f to the handler and writes its ACK, with c protected from
// eviction meanwhile; false when the connection must close.
func (s *Server) answer(ctx context.Context, c net.Conn, cs *conn, log *slog.Logger, peer string, f Frame) bool {
	// Under the admission lock: a connection closed to make room before
	// this point has its frame dropped unanswered (the sender keeps it and
	// sends it again), one marked here is never closed until answered.
	s.mu.Lock()
	evicted := cs.evicted.Load()
	cs.handling.Store(!evicted)
	s.mu.Unlock()
	if evicted {
		return false
	}
	defer cs.handling.Store(false)
	cs.framed.Store(true)
	ack := s.h.HandleFrame(ctx, peer, f)
	if ack == nil {
		return true
	}
	s.judge(cs, ack)
	c.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout.D()))
	if err := WriteFrame(c, ack); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.comp.Add(health.CounterWriteTimeouts, 1)
			log.Warn("MLLP peer did not take its ACK within write_timeout; connection closed",
				"write_timeout", s.cfg.WriteTimeout.D())
		} else {
			log.Warn("MLLP writing ACK failed; connection closed", "err", err)
		}
		return false
	}
	return true
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
