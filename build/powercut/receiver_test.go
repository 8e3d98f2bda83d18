package powercut

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

// receiverMaxBytes is what the host's MLLP receiver takes in one frame:
// the largest report with room to spare.
const receiverMaxBytes = 8 << 20

// arrival is one message a destination's receiver saw: its control ID,
// when, and (MLLP) what it answered.
type arrival struct {
	ID   string
	At   time.Time
	Code string
}

// receiver is a host MLLP receiver behind one of the guest's MLLP
// destinations. The rig takes reports' down for some boots (the guest's
// messages for it stay queued while the others are delivered) and brings it
// up for others. It answers AR, a permanent refusal, to the control IDs
// refuse picks: rejects' refuses everything, and with max_attempts 1 the
// guest dead-letters each at once.
type receiver struct {
	t      *testing.T
	port   int
	refuse func(id string) bool

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	got   []arrival
	wg    sync.WaitGroup
}

func newReceiver(t *testing.T, refuse func(string) bool) *receiver {
	rc := &receiver{t: t, port: freePort(t), refuse: refuse, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { rc.setUp(false) })
	return rc
}

// setUp starts or stops listening; stopping also closes every connection,
// as a receiver that goes down does.
func (rc *receiver) setUp(up bool) {
	rc.mu.Lock()
	if up == (rc.ln != nil) {
		rc.mu.Unlock()
		return
	}
	if !up {
		rc.ln.Close()
		rc.ln = nil
		for c := range rc.conns {
			c.Close()
		}
		rc.mu.Unlock()
		rc.wg.Wait()
		return
	}
	defer rc.mu.Unlock()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", rc.port))
	if err != nil {
		rc.t.Fatalf("reports receiver: %v", err)
	}
	rc.ln = ln
	rc.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rc.mu.Lock()
			rc.conns[c] = true
			rc.mu.Unlock()
			rc.wg.Go(func() { rc.serve(c) })
		}
	})
}

func (rc *receiver) serve(c net.Conn) {
	defer func() {
		c.Close()
		rc.mu.Lock()
		delete(rc.conns, c)
		rc.mu.Unlock()
	}()
	rd := mllp.NewReader(c, receiverMaxBytes)
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			return
		}
		m, err := hl7.Parse(f.Data)
		if err != nil || f.Oversize {
			rc.t.Errorf("reports receiver: a frame of %d bytes does not parse (%v) or is over %d bytes", len(f.Data), err, receiverMaxBytes)
			return
		}
		id, code := m.Header().ControlID, flow.Accepted
		if rc.refuse(id) {
			code = flow.Rejected
		}
		rc.mu.Lock()
		rc.got = append(rc.got, arrival{ID: id, At: time.Now(), Code: string(code)})
		rc.mu.Unlock()
		if err := mllp.WriteFrame(c, hl7.ACK(m, code, 0, "", "RCV", time.Now())); err != nil {
			return
		}
	}
}

// arrivals is everything received so far, in order.
func (rc *receiver) arrivals() []arrival {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}
