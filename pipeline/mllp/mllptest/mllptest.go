// Package mllptest runs a real MLLP receiver on loopback TCP for tests: a
// downstream system built on the mllp codec that answers every message with
// an HL7 acknowledgement and records what it accepted. It stops when the
// test ends. Only tests import it.
package mllptest

import (
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

// maxMessageBytes bounds what the receiver keeps of one frame.
const maxMessageBytes = 1 << 20

// Receiver listens on 127.0.0.1, answers AA for every message hl7.Parse
// accepts (and records it) and AR for every one it refuses (not recorded).
// Connections are served concurrently, each in order.
type Receiver struct {
	Addr string // host:port

	mu  sync.Mutex
	got [][]byte
}

// Start runs a Receiver on a free port until the test ends; then it closes
// the listener and every open connection and waits for its goroutines.
func Start(t testing.TB) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := &Receiver{Addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var connsMu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			connsMu.Lock()
			conns = append(conns, c)
			connsMu.Unlock()
			wg.Go(func() { rcv.serve(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	return rcv
}

func (rcv *Receiver) serve(c net.Conn) {
	defer c.Close()
	rd := mllp.NewReader(c, maxMessageBytes)
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			return
		}
		m, err := hl7.Parse(f.Data)
		var ack []byte
		if err != nil {
			ack = hl7.ACKUnparsed(f.Data, flow.Rejected, hl7.ErrorCode(err), "unparseable", "RCV", time.Now())
		} else {
			rcv.mu.Lock()
			rcv.got = append(rcv.got, f.Data)
			rcv.mu.Unlock()
			ack = hl7.ACK(m, flow.Accepted, 0, "", "RCV", time.Now())
		}
		if err := mllp.WriteFrame(c, ack); err != nil {
			return
		}
	}
}

// Got returns every message accepted so far, in arrival order. The caller
// may keep the slice; the messages themselves are shared and must not be
// changed.
func (rcv *Receiver) Got() [][]byte {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	return slices.Clone(rcv.got)
}

// Len is how many messages were accepted so far.
func (rcv *Receiver) Len() int {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	return len(rcv.got)
}
