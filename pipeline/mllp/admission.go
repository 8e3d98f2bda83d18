package mllp

import (
	"crypto/tls"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// The admission rule (docs/operations.md, "MLLP admission under a flood").
// Standing is earned only by frames the gateway answered AA (or CA): junk,
// refused frames, idling and slow first frames cost an attacker nothing, so
// they earn nothing. When the listener is full, a newcomer takes the slot
// of, in this order:
//
//  1. a spent connection: one that has sent frames but never had one
//     accepted (addresses that have had messages accepted give way last,
//     then the address holding most connections first, oldest first);
//  2. a connection still within its first-frame grace (it has sent no
//     frame yet), but only from an address that holds more connections
//     than the newcomer's, counting on its side only those that have had
//     no message accepted: a flood from a few addresses cannot take a new
//     sender's grace, the new sender can take the flood's;
//  3. the connection whose last accepted message is oldest, but only for a
//     newcomer from an address that has had a message accepted since, or
//     from its own address: a sender that reconnects replaces its idle
//     connection, whose end the server may not have read yet.
//
// Otherwise the newcomer is refused. An address at max_connections_per_peer
// may replace only its own spent or waiting connections. A connection
// whose frame is being handled, or whose frame waits unread in its socket,
// is never closed.

// maxCredited bounds the table of addresses that have had a message
// accepted; when full, the address accepted longest ago is forgotten.
const maxCredited = 4096

// conn is one admitted connection as the admission table sees it.
type conn struct {
	raw    net.Conn // the TCP connection under any TLS, closed to evict
	ip     string
	opened time.Time
	framed atomic.Bool // a complete frame has arrived: idle_timeout applies
	// accepted is when its last frame answered AA or CA was, in Unix
	// nanoseconds; 0 while none was.
	accepted atomic.Int64
	// handling is set while a frame is with the handler and its ACK being
	// written: closing it then would lose the sender its answer.
	handling atomic.Bool
	// evicted is set, under Server.mu, when it was closed to make room.
	evicted atomic.Bool
}

// standing is how a connection ranks for eviction, lower going first.
type standing struct {
	class    int       // 1 spent, 2 in grace, 3 accepted, as in the rule above
	credited bool      // its address has had a message accepted
	peerConn int       // connections its address holds
	since    time.Time // opened, or for class 3 its last accepted message
}

func (a standing) before(b standing) bool {
	switch {
	case a.class != b.class:
		return a.class < b.class
	case a.class == 3:
		return a.since.Before(b.since) // least recently accepted first
	case a.credited != b.credited:
		return !a.credited
	case a.peerConn != b.peerConn:
		return a.peerConn > b.peerConn
	}
	return a.since.Before(b.since)
}

func (s *Server) standingLocked(c *conn) standing {
	_, credited := s.credit[c.ip]
	st := standing{class: 2, credited: credited, peerConn: s.perPeer[c.ip], since: c.opened}
	if at := c.accepted.Load(); at != 0 {
		st.class, st.since = 3, time.Unix(0, at)
	} else if c.framed.Load() {
		st.class = 1
	}
	return st
}

// mayEvictLocked says whether a newcomer from ip may take c's slot; own
// says the newcomer's address is at max_connections_per_peer and replaces
// one of its own.
//
// newcomerConns is how many live connections the newcomer's address holds:
// one its sender has already closed (a sender that connects per message
// closes the last before it opens the next, and the server may not have
// read the end yet) does not count against it.
func (s *Server) mayEvictLocked(ip string, c *conn, st standing, own bool, newcomerConns int) bool {
	if own {
		return c.ip == ip && st.class < 3
	}
	switch st.class {
	case 1:
		return true
	case 2:
		return c.ip != ip && st.peerConn > newcomerConns
	default:
		if c.ip == ip {
			// The sender has moved to a new connection; the end of this
			// one may still be on its way.
			return true
		}
		at, ok := s.credit[ip]
		return ok && at.After(st.since)
	}
}

// victimLocked is the connection a newcomer from ip displaces, or nil.
// Usually the first pick has nothing waiting in its socket and, in its
// grace, its address outnumbers the newcomer's: one scan and a few system
// calls per admission, not a sort, because the accept loop runs this for
// every connection of a flood.
func (s *Server) victimLocked(ip string, own bool) *conn {
	var skip map[*conn]bool
	newcomerConns := s.liveConnsLocked(ip)
	for {
		var victim *conn
		var best standing
		for c := range s.conns {
			if skip[c] || c.handling.Load() {
				continue
			}
			st := s.standingLocked(c)
			if !s.mayEvictLocked(ip, c, st, own, newcomerConns) {
				continue
			}
			if victim == nil || st.before(best) {
				victim, best = c, st
			}
		}
		if victim == nil {
			return nil
		}
		if !pending(victim.raw) && (own || best.class != 2 || s.outnumbersLocked(victim, newcomerConns)) {
			return victim
		}
		if skip == nil {
			skip = map[*conn]bool{}
		}
		skip[victim] = true
	}
}

// outnumbersLocked re-checks a pick in its first-frame grace against the
// connections its address holds that have earned nothing: not those its
// sender has closed and the server not yet released, nor those that have
// had a message accepted. A sender that connects per message closes the
// last before it opens the next, and on a loaded machine the end can
// reach the server after the new connection; counted, the old one made
// the new one look like one of two and give way to a newcomer holding
// one. Only the pick is re-checked, to keep one scan per admission under
// a flood. A pick its own sender has closed may always go.
func (s *Server) outnumbersLocked(victim *conn, newcomerConns int) bool {
	if peerClosed(victim.raw) {
		return true
	}
	n := 0
	for c := range s.conns {
		if c.ip == victim.ip && c.accepted.Load() == 0 && !peerClosed(c.raw) {
			n++
		}
	}
	return n > newcomerConns
}

// admit enters a new connection in the admission table, or says no.
func (s *Server) admit(c net.Conn) (*conn, bool) {
	raw := c
	if tc, ok := c.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	ip := peerIP(c.RemoteAddr())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perPeer[ip] >= s.cfg.MaxConnectionsPerPeer {
		victim := s.victimLocked(ip, true)
		if victim == nil {
			s.comp.Add(health.CounterRefusedPerPeer, 1)
			s.log.Warn("MLLP connection refused: max_connections_per_peer reached for this address and each of its connections has had a message accepted or is being answered",
				"peer", ip, "max_connections_per_peer", s.cfg.MaxConnectionsPerPeer)
			return nil, false
		}
		s.evictLocked(victim)
	}
	if len(s.conns) >= s.cfg.MaxConnections {
		victim := s.victimLocked(ip, false)
		if victim == nil {
			s.comp.Add(health.CounterRefusedConnections, 1)
			s.log.Warn("MLLP connection refused: max_connections reached and no connection may give way to this address (see MLLP admission in docs/operations.md); raise max_connections or find the sender that leaks connections",
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

// liveConnsLocked counts ip's connections that its sender has not closed.
func (s *Server) liveConnsLocked(ip string) int {
	n := 0
	for c := range s.conns {
		if c.ip == ip && !peerClosed(c.raw) {
			n++
		}
	}
	return n
}

// peerClosed reports whether the other end has closed c and nothing is
// left to read: a peek finds the end of the stream.
func peerClosed(c net.Conn) bool {
	closed := false
	withFD(c, func(fd int) {
		var b [1]byte
		n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		closed = n == 0 && err == nil
	})
	return closed
}

// pending reports whether bytes wait unread in c's socket.
func pending(c net.Conn) bool {
	n := 0
	withFD(c, func(fd int) { n, _ = unix.IoctlGetInt(fd, unix.SIOCINQ) })
	return n > 0
}

// withFD runs f on c's socket, if it has one. Control, not Read: the
// connection's own goroutine holds the read lock while it waits for a
// frame, and admission runs under the server's lock.
func withFD(c net.Conn, f func(fd int)) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) { f(int(fd)) })
}

// evictLocked closes victim and frees its slot at once, so the newcomer
// takes it; its goroutine sees the closed socket and ends.
func (s *Server) evictLocked(victim *conn) {
	st := s.standingLocked(victim)
	victim.evicted.Store(true)
	s.forgetLocked(victim)
	_ = victim.raw.Close()
	s.comp.Add(health.CounterEvicted, 1)
	why := map[int]string{1: "it had no message accepted", 2: "it had sent no frame yet and its address held more connections", 3: "its last accepted message was the oldest"}[st.class]
	s.log.Warn("MLLP connection closed to make room: listener or address at its connection limit and "+why,
		"peer", victim.ip, "open_for", time.Since(victim.opened).Round(time.Millisecond), "max_connections", s.cfg.MaxConnections)
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

// judge records the gateway's answer to one of c's frames: only an
// acknowledgement that accepted it (AA, or CA in enhanced mode) earns the
// connection and its address standing.
func (s *Server) judge(c *conn, ack []byte) {
	if code, _, _, err := hl7.ParseACK(ack); err != nil || (code != "AA" && code != "CA") {
		return
	}
	now := time.Now()
	c.accepted.Store(now.UnixNano())
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.credit[c.ip]; !ok && len(s.credit) >= maxCredited {
		oldest := ""
		for ip, at := range s.credit {
			if oldest == "" || at.Before(s.credit[oldest]) {
				oldest = ip
			}
		}
		delete(s.credit, oldest)
	}
	s.credit[c.ip] = now
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
