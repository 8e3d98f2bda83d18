package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/lis01"
	"github.com/hl7edge/hl7edge/pipeline/logtest"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
)

// The soak's senders. Each one is a device that behaves as a careful real
// one does: it sends one message at a time and waits for the answer; on AE
// (or a LIS01 refusal) it waits and sends the same message again; on AR it
// gives up on that message; when it never learns the outcome (the gateway
// died mid-exchange) it moves on to a new control ID, since it cannot know
// whether the old one was kept.

// soakPHI is put in PID-5 of every message: it must never appear in the
// daemon's logs or on MQTT.
const soakPHI = "SOAKPHI" + logtest.Marker

// soakFillBytes is the size of the quota fault's messages: large, so that
// a few hundred fill the spool, and below the 256 KiB that Badger keeps in
// its LSM tree.
const soakFillBytes = 96 << 10

// soakMessage builds the message for a stream's sequence number,
// deterministically, so the checks can compare delivered bytes.
func soakMessage(stream string, seq int, kind soakKind) (id string, raw []byte) {
	id = fmt.Sprintf("%s-%06d", stream, seq)
	typ, proc, ver := "ADT^A01^ADT_A01", "P", "2.5.1"
	switch {
	case kind == kindArchive:
		typ = "SIU^S12^SIU_S12"
	case kind == kindTest:
		typ, proc = "ORU^R01^ORU_R01", "T"
	case kind == kindBad:
		typ, ver = "ORU^R01^ORU_R01", "3.0"
	case kind == kindFill || seq%2 == 1:
		typ = "ORU^R01^ORU_R01"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "MSH|^~\\&|SOAK|%s|EHR|HOSP|20261122%06d||%s|%s|%s|%s\r", strings.ToUpper(stream), seq%240000, typ, id, proc, ver)
	fmt.Fprintf(&b, "PID|1||%s^^^HOSP^MR||%s^%s^%d||19700101|U\r", id, soakPHI, strings.ToUpper(stream), seq)
	b.WriteString("PV1|1|I|ICU^01^A\r")
	if kind == kindFill {
		b.WriteString("OBX|1|ED|IMG^Image||^AP^^Base64^")
		// Pseudo-random Base64, as an image would be: Badger compresses
		// its tables, and a repeating pattern would take no disk at all.
		rng := rand.New(rand.NewPCG(uint64(seq), uint64(len(stream))))
		pad := soakFillBytes - b.Len() - 16
		for i := 0; i < pad; i++ {
			b.WriteByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[rng.IntN(64)])
		}
		b.WriteString("||||||F\r")
	} else {
		fmt.Fprintf(&b, "OBX|1|NM|GLU^Glucose||%d.%d|mmol/L|3.9-6.1|N|||F\r", 4+seq%3, seq%10)
	}
	return id, []byte(b.String())
}

// soakKindFor spreads the kinds over a stream's messages.
func soakKindFor(seq int, canAR bool) soakKind {
	switch {
	case seq%19 == 7:
		return kindTest
	case canAR && seq%23 == 11:
		return kindBad
	case seq%5 == 2:
		return kindArchive
	}
	return kindEHR
}

// errNotSent means nothing reached the gateway: send the same message again.
var errNotSent = errors.New("not sent")

// soakExchanger offers one message and returns the answer code ("AA",
// "AE", "AR"), errNotSent, or another error for an unknown outcome.
type soakExchanger interface {
	exchange(ctx context.Context, id string, raw []byte) (string, error)
	close()
}

// soakSender is one sending device.
type soakSender struct {
	name   string
	ex     soakExchanger
	ledger *soakLedger
	pace   time.Duration // pause between messages
	fill   bool          // sends kindFill messages, only while enabled
	canAR  bool          // may send malformed messages (its framing carries AR)
	on     *atomic.Bool  // fill senders: the quota fault is on
	stop   *atomic.Bool  // no new messages; finish the one in hand
	rng    *rand.Rand    // owned by the sender's goroutine
	busy   atomic.Bool   // holds a message not yet answered AA/AR
}

// run sends until ctx ends, or until stop is set and the message in hand
// is settled.
func (s *soakSender) run(ctx context.Context) {
	defer s.ex.close()
	seq := 0
	var (
		id   string
		raw  []byte
		kind soakKind
		have bool
	)
	for ctx.Err() == nil {
		if !have {
			s.busy.Store(false)
			if s.stop.Load() || (s.fill && !s.on.Load()) {
				if s.stop.Load() {
					return
				}
				sleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			seq++
			kind = soakKindFor(seq, s.canAR)
			if s.fill {
				kind = kindFill
			}
			id, raw = soakMessage(s.name, seq, kind)
			have = true
			s.busy.Store(true)
		}
		s.ledger.attempt(s.name, id, kind, raw)
		code, err := s.ex.exchange(ctx, id, raw)
		switch {
		case errors.Is(err, errNotSent):
			s.ledger.undoAttempt()
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		case err != nil:
			s.ledger.answer(id, "")
			have = false
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		s.ledger.answer(id, code)
		switch code {
		case "AE", "CE":
			// The gateway did not keep it: the same message, later.
			sleepCtx(ctx, time.Duration(300+s.rng.IntN(700))*time.Millisecond)
			continue
		}
		have = false
		if s.pace > 0 {
			sleepCtx(ctx, s.pace/2+time.Duration(s.rng.Int64N(int64(s.pace))))
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// undoAttempt takes back the count of an attempt that never left.
func (l *soakLedger) undoAttempt() {
	l.mu.Lock()
	l.sent--
	l.mu.Unlock()
}

// mllpExchanger is an MLLP/TCP connection, redialled after a failure.
type mllpExchanger struct {
	addr   string
	c      *mllp.Client
	dials  int
	ledger *soakLedger
}

func (m *mllpExchanger) exchange(ctx context.Context, id string, raw []byte) (string, error) {
	if m.c == nil {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := mllp.Dial(dctx, m.addr, nil)
		cancel()
		if err != nil {
			return "", errNotSent
		}
		m.c = c
		m.dials++
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	ack, err := m.c.Send(sctx, raw)
	if err != nil {
		m.close()
		return "", err
	}
	return checkACK(m.ledger, id, ack)
}

func (m *mllpExchanger) close() {
	if m.c != nil {
		m.c.Close()
		m.c = nil
	}
}

// checkACK reads an HL7 ACK for id.
func checkACK(l *soakLedger, id string, ack []byte) (string, error) {
	code, acked, _, err := hl7.ParseACK(ack)
	if err != nil {
		l.oddity(fmt.Sprintf("unreadable ACK for %s: %v", id, err))
		return "", err
	}
	if acked != id {
		l.oddity(fmt.Sprintf("ACK for %s names MSA-2 %s", id, acked))
		return "", fmt.Errorf("ACK names %s", acked)
	}
	return code, nil
}

// serialMLLPExchanger plays a device that speaks MLLP on a serial line.
// One reader goroutine turns the line into ACK frames; an ACK for another
// control ID is a late answer to a message given up on, and is skipped.
type serialMLLPExchanger struct {
	p      *soakPTY
	acks   chan []byte
	wait   time.Duration
	ledger *soakLedger
	stale  int
}

func newSerialMLLPExchanger(p *soakPTY, ledger *soakLedger) *serialMLLPExchanger {
	s := &serialMLLPExchanger{p: p, acks: make(chan []byte, 64), wait: 8 * time.Second, ledger: ledger}
	go func() {
		// Ends when the pty's master is closed at the end of the test.
		defer close(s.acks)
		r := mllp.NewReader(p.m, 64<<10)
		for {
			f, err := r.ReadFrame()
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if err != nil {
				time.Sleep(10 * time.Millisecond) // EIO while no one holds the slave
				continue
			}
			select {
			case s.acks <- f.Data:
			default: // nobody waits for it: a late answer
			}
		}
	}()
	return s
}

func (s *serialMLLPExchanger) exchange(ctx context.Context, id string, raw []byte) (string, error) {
	// Answers to earlier, abandoned messages may be waiting: drop them.
	for {
		select {
		case <-s.acks:
			s.stale++
			continue
		default:
		}
		break
	}
	if err := mllp.WriteFrame(s.p.m, raw); err != nil {
		return "", errNotSent
	}
	t := time.NewTimer(s.wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-t.C:
			return "", fmt.Errorf("no ACK for %s within %s", id, s.wait)
		case ack, ok := <-s.acks:
			if !ok {
				return "", errors.New("line closed")
			}
			if _, acked, _, err := hl7.ParseACK(ack); err == nil && acked != id {
				s.stale++
				continue
			}
			return checkACK(s.ledger, id, ack)
		}
	}
}

func (s *serialMLLPExchanger) close() {}

// lisExchanger plays a laboratory analyser speaking LIS01-A2. The last
// frame's ACK is the gateway's AA; a refusal (NAK six times) stands for AE.
type lisExchanger struct {
	tx *lis01.Sender
}

func newLISExchanger(p *soakPTY) *lisExchanger {
	return &lisExchanger{tx: lis01.NewSender(p.m, lis01.Options{ReplyTimeout: 5 * time.Second, BusyDelay: time.Second, Poll: 100 * time.Millisecond})}
}

func (x *lisExchanger) exchange(ctx context.Context, _ string, raw []byte) (string, error) {
	err := x.tx.Send(ctx, raw)
	switch {
	case err == nil:
		return "AA", nil
	case errors.Is(err, lis01.ErrRefused):
		return "AE", nil
	case errors.Is(err, lis01.ErrBusy), errors.Is(err, lis01.ErrContention):
		return "", errNotSent
	}
	return "", err
}

func (x *lisExchanger) close() {}
