package mllp

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// verdict answers like intake does: AA for a frame that starts with an MSH
// segment, AR for anything else, so the admission table sees real HL7
// acknowledgements.
func verdict(_ context.Context, _ string, f Frame) []byte {
	code := flow.Rejected
	if strings.HasPrefix(string(f.Data), "MSH|") {
		code = flow.Accepted
	}
	return hl7.ACKUnparsed(f.Data, code, hl7.CodeSegmentSequenceError, "not an HL7 message", "", time.Now())
}

// hl7Msg is a minimal message verdict accepts; id is its MSH-10.
func hl7Msg(id string) string {
	return "MSH|^~\\&|LAB|WARD|GW|HOSP|20260101120000||ORU^R01|" + id + "|P|2.5\rPID|1||X"
}

// junk is the probe's frame: one junk frame, answered AR.
const junk = "junk"

// sendOnce connects from ip, sends one frame and reads the answer's MSA-1
// and MSA-2, waiting before the frame when wait is set.
func sendOnce(ctx context.Context, ip, addr, frame string, wait time.Duration) (code, acked string, err error) {
	c, err := dialFrom(ctx, ip, addr)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	time.Sleep(wait)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := WriteFrame(c, []byte(frame)); err != nil {
		return "", "", err
	}
	f, err := NewReader(c, 0).ReadFrame()
	if err != nil {
		return "", "", err
	}
	code, acked, _, err = hl7.ParseACK(f.Data)
	return code, acked, err
}

// holdJunk opens n connections from each of ips, each sending one junk
// frame (answered AR) and then idling. It returns when all were answered;
// the connections close when the test ends.
func holdJunk(t *testing.T, addr string, ips []string, n int) []net.Conn {
	t.Helper()
	var held []net.Conn
	for _, ip := range ips {
		for range n {
			c, err := dialFrom(context.Background(), ip, addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			rc := &rawConn{Conn: c, r: NewReader(c, 0)}
			rc.send(t, junk)
			rc.SetReadDeadline(time.Now().Add(10 * time.Second))
			f, err := rc.r.ReadFrame()
			if err != nil {
				t.Fatalf("junk connection from %s: %v", ip, err)
			}
			if code, _, _, _ := hl7.ParseACK(f.Data); code != "AR" {
				t.Fatalf("junk frame answered %q, want AR", code)
			}
			held = append(held, c)
		}
	}
	return held
}

var attackerIPs = []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}

// TestAdmissionJunkFramesCannotLockOut is issue 24's item 1: 16
// connections from each of 4 addresses, each sending one junk frame
// (answered AR) and then idling, fill the listener. A sender whose
// messages are accepted, connecting once per message, from a new address
// and from one of the attacker's, must still get every message in.
func TestAdmissionJunkFramesCannotLockOut(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ListenerConfig{IdleTimeout: units.Duration(5 * time.Minute)}, HandlerFunc(verdict))
	holdJunk(t, ts.addr(), attackerIPs, 16)
	waitFor(t, "the junk connections to fill the listener", func() bool { return ts.Connections() == DefaultMaxConnections })
	for i, ip := range []string{"127.0.0.1", "127.0.0.6", "127.0.0.1", "127.0.0.2"} {
		for j := range 5 {
			id := fmt.Sprintf("M%d-%d", i, j)
			code, acked, err := sendOnce(context.Background(), ip, ts.addr(), hl7Msg(id), 0)
			if err != nil || code != "AA" || acked != id {
				t.Fatalf("message %s from %s with the listener full of junk connections: %s %s, err %v (evicted %d, refused %d, refused per peer %d)",
					id, ip, code, acked, err, ts.comp.Counter(health.CounterEvicted),
					ts.comp.Counter(health.CounterRefusedConnections), ts.comp.Counter(health.CounterRefusedPerPeer))
			}
		}
	}
}

// TestAdmissionSlowFirstFrameSurvivesChurn is issue 24's item 6: under a
// churn flood from addresses that each sent one frame first, a new
// connection that waits 0.5 s or 2 s before its first frame keeps its
// slot (first_frame_timeout is 30 s) and gets its answer, every time.
func TestAdmissionSlowFirstFrameSurvivesChurn(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ListenerConfig{IdleTimeout: units.Duration(5 * time.Minute)}, HandlerFunc(verdict))
	addr := ts.addr()
	// Each attacker address has sent a frame before: an accepted one, the
	// strongest standing cheap traffic can have.
	for _, ip := range attackerIPs {
		if code, _, err := sendOnce(context.Background(), ip, addr, hl7Msg("A-"+ip), 0); err != nil || code != "AA" {
			t.Fatalf("attacker's first message: %s %v", code, err)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var churn sync.WaitGroup
	var dials atomic.Int64
	for i := range 96 {
		ip := attackerIPs[i%len(attackerIPs)]
		churn.Go(func() {
			for ctx.Err() == nil {
				c, err := dialFrom(ctx, ip, addr)
				if err != nil {
					sleepCtx(ctx, 20*time.Millisecond)
					continue
				}
				dials.Add(1)
				stop := context.AfterFunc(ctx, func() { c.Close() })
				_, _ = c.Read(make([]byte, 1)) // idle until closed
				stop()
				c.Close()
			}
		})
	}
	defer churn.Wait()
	defer stop()
	waitFor(t, "the churn to fill the listener", func() bool { return ts.Connections() == DefaultMaxConnections && dials.Load() > 200 })
	for _, wait := range []time.Duration{500 * time.Millisecond, 2 * time.Second} {
		for j := range 5 {
			id := fmt.Sprintf("slow-%s-%d", wait, j)
			code, acked, err := sendOnce(ctx, "127.0.0.1", addr, hl7Msg(id), wait)
			if err != nil || code != "AA" || acked != id {
				t.Errorf("sender waiting %s before its first frame under churn (%d dials): try %d: %s %s, err %v",
					wait, dials.Load(), j+1, code, acked, err)
			}
		}
	}
	t.Logf("%d churn dials; evicted %d, refused %d, refused per peer %d", dials.Load(), ts.comp.Counter(health.CounterEvicted),
		ts.comp.Counter(health.CounterRefusedConnections), ts.comp.Counter(health.CounterRefusedPerPeer))
}

// TestAdmissionAcceptedGiveWayLeastRecentFirst: with every slot held by a
// connection that has had a message accepted, a stranger is refused, an
// address accepted more recently takes the slot of the least recently
// accepted connection, and that address, coming back, is refused in turn.
func TestAdmissionAcceptedGiveWayLeastRecentFirst(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ListenerConfig{MaxConnections: 4, MaxConnectionsPerPeer: 4}, HandlerFunc(verdict))
	held := map[string]*rawConn{}
	for i := 1; i <= 4; i++ {
		ip := fmt.Sprintf("127.0.4.%d", i)
		c, err := dialFrom(context.Background(), ip, ts.addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		rc := &rawConn{Conn: c, r: NewReader(c, 0)}
		rc.send(t, hl7Msg(ip))
		rc.expectACK(t, "AA", ip)
		held[ip] = rc
		time.Sleep(5 * time.Millisecond) // distinct acceptance times
	}
	refusedBefore := ts.comp.Counter(health.CounterRefusedConnections)
	if _, _, err := sendOnce(context.Background(), "127.0.4.9", ts.addr(), hl7Msg("stranger"), 0); err == nil {
		t.Fatal("a stranger got in although every slot had a message accepted")
	}
	// The newcomer stays open, so the listener stays full.
	c, err := dialFrom(context.Background(), "127.0.4.2", ts.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	again := &rawConn{Conn: c, r: NewReader(c, 0)}
	again.send(t, hl7Msg("again"))
	again.expectACK(t, "AA", "again")
	held["127.0.4.1"].expectClosed(t)
	if _, _, err := sendOnce(context.Background(), "127.0.4.1", ts.addr(), hl7Msg("back"), 0); err == nil {
		t.Error("127.0.4.1, now the least recently accepted address, displaced a connection accepted after it")
	}
	if got := ts.comp.Counter(health.CounterRefusedConnections) - refusedBefore; got != 2 {
		t.Errorf("refused_connections grew by %d, want 2", got)
	}
}

// handTable is a Server's admission table filled by hand from real
// loopback connections, for races a live listener leaves only rarely.
type handTable struct {
	t  *testing.T
	s  *Server
	ln net.Listener
}

func newHandTable(t *testing.T, maxConns int) *handTable {
	comp := health.NewRegistry("t", "v", nil).Component(health.Source, "x", "mllp")
	s, err := NewServer("x", ListenerConfig{Listen: "127.0.0.1:0", MaxConnections: maxConns}, HandlerFunc(verdict), discardLogger(), comp)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &handTable{t, s, ln}
}

// connect opens a connection from ip and enters the server's end in the
// table; it returns the client's end.
func (h *handTable) connect(ip string) (net.Conn, *conn) {
	c, err := dialFrom(context.Background(), ip, h.ln.Addr().String())
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	sc, err := h.ln.Accept()
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { sc.Close() })
	cs, ok := h.s.admit(sc)
	if !ok {
		h.t.Fatalf("connection from %s refused", ip)
	}
	return c, cs
}

// accept records an AA for a frame on cs, as the server does.
func (h *handTable) accept(cs *conn) {
	h.s.judge(cs, verdict(context.Background(), cs.ip, Frame{Data: []byte(hl7Msg("M1"))}))
}

// victim is the connection a newcomer from ip would displace, or nil.
func (h *handTable) victim(ip string) *conn {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	return h.s.victimLocked(ip, false)
}

// TestAdmissionSendersLastConnectionDoesNotCountAgainstItsNext: a sender
// that connects per message closes its last connection before it opens
// the next, and on a loaded machine the server may see the new connection
// before the end of the old one, or not have read that end yet. Found as
// a flake of TestServerIdleFloodKeepsIntakeOpen ("connection reset by
// peer", message 48 of 200; "EOF", message 124): the old connection
// still counted for the sender's address, so its new one, waiting for
// its first frame, looked like one of two from its address and gave way
// to a newcomer from an attacker's address holding one.
func TestAdmissionSendersLastConnectionDoesNotCountAgainstItsNext(t *testing.T) {
	h := newHandTable(t, 3)
	const sender, attacker = "127.0.0.1", "127.0.5.1"
	last, lastConn := h.connect(sender)
	h.accept(lastConn)
	h.connect(sender)   // the next message's connection, its frame not yet sent
	h.connect(attacker) // the listener is full now
	// The end of the last connection still on its way, then read.
	for _, closed := range []bool{false, true} {
		if closed {
			last.Close()
			waitFor(t, "the server's end to see the close", func() bool { return peerClosed(lastConn.raw) })
		}
		if v := h.victim(attacker); v != nil {
			t.Fatalf("last connection closed %v: a newcomer from %s (holding one connection) may take the slot of a connection from %s (class %d), whose address holds one besides its answered last one",
				closed, attacker, v.ip, h.s.standingLocked(v).class)
		}
	}
}

// TestAdmissionSenderReplacesItsOwnIdleConnection: the end of a sender's
// last connection can still be on its way when its next connection is
// accepted (on a loaded machine the kernel delivered the FIN 17 ms late,
// after the next SYN). Found as a flake of TestServerIdleFloodKeepsIntakeOpen
// ("err EOF", message 139 of 200): with the listener full of silent
// connections from addresses holding one each, the sender's newcomer held
// one too and was refused. A sender whose messages are accepted gets in:
// its new connection takes the slot of its own idle one.
func TestAdmissionSenderReplacesItsOwnIdleConnection(t *testing.T) {
	h := newHandTable(t, 3)
	const sender = "127.0.0.1"
	_, last := h.connect(sender) // answered, and its end not yet seen
	h.accept(last)
	h.connect("127.0.5.1")
	h.connect("127.0.5.2") // the listener is full of silent connections
	if v := h.victim(sender); v != last {
		t.Fatalf("the sender's new connection would displace %v, want its own idle connection", v)
	}
	// Its idle connection is its own to give: nobody else's newcomer takes it.
	if v := h.victim("127.0.5.3"); v == last {
		t.Fatal("a stranger's newcomer may take the slot of a connection that had a message accepted")
	}
}
