package powercut

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/build/powercut/nbd"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
)

// reopenLine is what the gateway logs once it has closed and re-opened its
// spool after a failed sync (issue 23): from the failure until then it
// answers AE, never AA.
const reopenLine = "spool re-opened after a failed sync"

// ext4Gone are the kernel's lines for a file system that stopped writing
// (its journal aborted, or remounted read-only): no re-open can help until
// the box restarts, so the gateway must stay in AE (FAULT 5) till then.
var ext4Gone = []string{"Aborting journal", "Detected aborted journal", "Remounting filesystem read-only", "EXT4-fs error"}

// Limits of one injection.
const (
	eioReopenLimit = 30 * time.Second // failure to re-open
	eioResumeLimit = 10 * time.Second // re-open to the first AA again
)

// eioFigures are what the EIO injections showed.
type eioFigures struct {
	Injections int            `json:"injections"`
	ByOp       map[string]int `json:"injections_by_request"`
	FSGone     int            `json:"file_system_stopped_writing"`
	// Unreported: the file system stopped writing and no fdatasync saw an
	// error (a flush failed in ext4's own journal commit).
	Unreported     int       `json:"file_system_stopped_without_telling_the_spool"`
	Fired          int       `json:"marked_write_failed"`
	Failed         int       `json:"requests_answered_eio"`
	LostBlocks     int       `json:"blocks_lost_to_eio"`
	MarkerAA       int       `json:"marked_message_answered_aa"`
	AAWhileFaulted int       `json:"aa_between_failure_and_reopen"`
	AEWhileFaulted int       `json:"ae_between_failure_and_reopen"`
	Alarmed        int       `json:"storage_error_alarms"`
	FaultLeft      int       `json:"fault_5_left_before_reopen"`
	Reopened       int       `json:"reopened"`
	ReopenSeconds  []float64 `json:"failure_to_reopen_seconds"`
	ResumeSeconds  []float64 `json:"reopen_to_first_aa_seconds"`
}

// injectEIO fails the disk write that holds a marked message (the spool's
// commit log being written) or, every other time, the flush that follows
// it; keeps sending on a probe connection besides the load; checks what the
// gateway answered from the failure on; and then cuts the power, so what
// the failed request lost shows at the final check.
func (r *rig) injectEIO(v *vm, j int) {
	e := &r.fig.EIO
	e.Injections++
	op := []nbd.Op{nbd.OpWrite, nbd.OpFlush}[j%2]
	if e.ByOp == nil {
		e.ByOp = map[string]int{}
	}
	e.ByOp[op.String()]++
	reopened := make(chan time.Time, 4)
	var gone atomic.Bool
	v.watch(func(line string) {
		if strings.Contains(line, reopenLine) {
			select {
			case reopened <- time.Now():
			default:
			}
		}
		for _, g := range ext4Gone {
			if strings.Contains(line, g) {
				gone.Store(true)
			}
		}
	})
	p := &prober{r: r, first: j * 100000, n: j * 100000}
	defer p.close()
	fail, marker, ok := r.armAndProbe(p, op)
	if !ok {
		r.t.Errorf("EIO injection %d (%s): the marked request never reached the disk within %s", j, op, eioReopenLimit)
		v.cut()
		<-r.disk.Idle()
		return
	}
	e.Fired++
	var reopenAt time.Time
	for deadline := fail.At.Add(eioReopenLimit); time.Now().Before(deadline); {
		select {
		case reopenAt = <-reopened:
			r.mu.Lock()
			r.boots = append(r.boots, reopenAt) // marks may be read back as the disk has them
			r.mu.Unlock()
			deadline = reopenAt.Add(eioResumeLimit + 5*time.Second)
		default:
		}
		if p.send() && !reopenAt.IsZero() {
			break // AA again after the re-open
		}
		time.Sleep(200 * time.Millisecond)
	}
	if gone.Load() {
		e.FSGone++
	}
	r.judgeEIO(j, marker, fail, reopenAt, gone.Load(), consoleOrder(v))
	// The cut comes a moment later: whatever the failed write lost and a
	// later sync did not write again is gone from the disk now.
	time.Sleep(time.Duration(rand.Int64N(int64(3 * time.Second))))
	v.cut()
	<-r.disk.Idle()
}

// armAndProbe arms the fault and sends probes until it fails a request. A
// write fault fails the write holding the marked probe (returned); a flush
// fault the flush straight after a write holding the marked probe (an
// fdatasync's own flush, not a journal commit's, which writes first). Both
// match the probe's token (probeToken), not its text, which the spool's
// commit log compresses away. Once the marked probe is answered and the
// fault has not fired, the next probe is marked instead: for a flush fault
// another write came between the probe's write and its flush, so the
// failure is whichever probe's sync that is, as when it matched any probe;
// for a write fault the token did not reach the disk whole (it very
// rarely does not; see probeToken).
func (r *rig) armAndProbe(p *prober, op nbd.Op) (fail nbd.Failure, marker string, ok bool) {
	fired := r.disk.Inject(nbd.Fault{Op: op, Match: probeMark(p.n + 1)})
	for deadline := time.Now().Add(eioReopenLimit); time.Now().Before(deadline); {
		// Retarget fails once the fault has fired: its channel has it.
		if p.n == p.first || r.disk.Retarget(probeMark(p.n+1)) {
			marker, _ = probe(p.n + 1)
			p.send()
		}
		select {
		case fail = <-fired:
			if op == nbd.OpFlush {
				// Judged without a marker, as before (judgeEIO): the
				// failed flush may be ext4's, which no fdatasync sees.
				marker = ""
			}
			return fail, marker, true
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fail, marker, false
}

// judgeEIO checks every answer from the first AE after the failure on: AE
// (or none) until the re-open, AA again within eioResumeLimit of it; and a
// marked probe (write faults) never AA. When the file
// system stopped writing (fsGone) there is no re-open to expect, only AE.
func (r *rig) judgeEIO(j int, marker string, fail nbd.Failure, reopenAt time.Time, fsGone bool, con consoleMarks) {
	e := &r.fig.EIO
	// Was v answered before the re-open? The console's order says it
	// without clocks: the gateway logs "message spooled" before it answers
	// AA, in the same stream as the re-open. Without that line, the host's
	// clock with a second's grace for the console's lag.
	faultedAt := func(v verdict) bool {
		if reopenAt.IsZero() {
			return true
		}
		if i, ok := con.spooled[v.ID]; ok && con.reopen >= 0 {
			return i < con.reopen
		}
		return v.Answered.Before(reopenAt.Add(-time.Second))
	}
	// The gateway knew of the failure once it answered the failed group
	// AE: from then on, no AA until the re-open.
	var markerAnswered, firstBad, firstAA time.Time
	var badID string
	aa := 0
	for _, v := range r.ledger.since(fail.At) {
		if v.ID == marker && v.Code == "AA" {
			e.MarkerAA++
			r.t.Errorf("EIO injection %d (%s): %s was answered AA though the request that should have made it durable failed", j, fail.Op, marker)
		}
		if v.Code == "AE" && (markerAnswered.IsZero() || v.Answered.Before(markerAnswered)) {
			markerAnswered = v.Answered
		}
	}
	if markerAnswered.IsZero() && fail.Op == nbd.OpFlush {
		// A flush fault can land in a flush the spool did not ask for
		// (ext4's own journal commit), and then no error reaches any
		// fdatasync: the gateway cannot know. Only the ledger's final check
		// (nothing ACKed lost) applies; the injection is counted, not
		// judged. A write fault always fails the spool's own sync.
		e.Unreported++
		return
	}
	if markerAnswered.IsZero() {
		r.t.Errorf("EIO injection %d (%s): nothing was answered AE after the failure: the spool's sync did not report it", j, fail.Op)
	}
	for _, v := range r.ledger.since(fail.At) {
		if markerAnswered.IsZero() || !v.Sent.After(markerAnswered) {
			continue // sent before the gateway could know
		}
		faulted := faultedAt(v)
		switch {
		case faulted && v.Code == "AA":
			aa++
			if firstBad.IsZero() {
				firstBad, badID = v.Answered, v.ID
			}
		case faulted && v.Code == "AE":
			e.AEWhileFaulted++
		case !faulted && v.Code == "AA" && firstAA.IsZero():
			firstAA = v.Answered
		}
	}
	e.AAWhileFaulted += aa
	r.judgeFaultShown(j, fail.Op, con)
	if aa > 0 {
		reopen := fmt.Sprintf("before %q", reopenLine)
		if reopenAt.IsZero() {
			reopen = fmt.Sprintf("and no %q within %s", reopenLine, eioReopenLimit)
		}
		r.t.Errorf("EIO injection %d (%s): %d answers AA after the failed sync %s (first: %s, %.1fs after the failure)",
			j, fail.Op, aa, reopen, badID, firstBad.Sub(fail.At).Seconds())
	}
	switch {
	case reopenAt.IsZero() && fsGone:
		return // ext4 gave up: AE until the restart is all the gateway can do
	case reopenAt.IsZero():
		r.t.Errorf("EIO injection %d (%s): no %q within %s of the failure", j, fail.Op, reopenLine, eioReopenLimit)
		return
	case firstAA.IsZero() || firstAA.Sub(reopenAt) > eioResumeLimit:
		r.t.Errorf("EIO injection %d (%s): no AA within %s of the re-open", j, fail.Op, eioResumeLimit)
	default:
		e.ResumeSeconds = append(e.ResumeSeconds, firstAA.Sub(reopenAt).Seconds())
	}
	e.Reopened++
	e.ReopenSeconds = append(e.ReopenSeconds, reopenAt.Sub(fail.At).Seconds())
}

// judgeFaultShown checks what the box shows while its spool is faulted: a
// storage_error alarm, and FAULT code 5 from the failure until the re-open
// (or, without one, until now), no other code in between.
func (r *rig) judgeFaultShown(j int, op nbd.Op, con consoleMarks) {
	e := &r.fig.EIO
	if con.alarm < 0 {
		r.t.Errorf("EIO injection %d (%s): no storage_error alarm after the failure", j, op)
		return
	}
	e.Alarmed++
	end := con.reopen
	if end < 0 {
		end = math.MaxInt
	}
	shown := false
	for _, l := range con.leds {
		switch {
		case l.line >= end:
		case l.code == "5":
			shown = true
		case shown:
			e.FaultLeft++
			r.t.Errorf("EIO injection %d (%s): the FAULT LED went from code 5 to %s before the spool was re-opened", j, op, l.code)
			return
		}
	}
	if !shown {
		r.t.Errorf("EIO injection %d (%s): the FAULT LED never showed code 5 while the spool was faulted", j, op)
	}
}

// consoleMarks is where, in one boot's console, the re-open line and each
// message's "message spooled" line came: line numbers, -1 for none.
type consoleMarks struct {
	reopen  int
	spooled map[string]int // control ID → line
	alarm   int            // the first storage_error alarm
	leds    []ledLine      // the FAULT LED's changes
}

// ledLine is a change of the FAULT LED: its line, and the code it flashes
// ("off" when off).
type ledLine struct {
	line int
	code string
}

func consoleOrder(v *vm) consoleMarks {
	v.mu.Lock()
	lines := slices.Clone(v.lines)
	v.mu.Unlock()
	o := consoleMarks{reopen: -1, alarm: -1, spooled: map[string]int{}}
	for i, l := range lines {
		if o.reopen < 0 && strings.Contains(l, reopenLine) {
			o.reopen = i
		}
		if o.alarm < 0 && strings.Contains(l, "kind=storage_error") {
			o.alarm = i
		}
		if _, m, ok := strings.Cut(l, ` led=fault meaning="`); ok {
			code, _, _ := strings.Cut(m, " ")
			o.leds = append(o.leds, ledLine{i, code})
		}
		if !strings.Contains(l, `msg="message spooled"`) {
			continue
		}
		if _, rest, ok := strings.Cut(l, " control_id="); ok {
			id, _, _ := strings.Cut(rest, " ")
			o.spooled[id] = i
		}
	}
	return o
}

// probeMark is what a fault matches to fail probe n's write or the flush
// after it: the middle 24 characters of its token, which compression
// leaves literal (probeToken).
func probeMark(n int) []byte { return []byte(probeToken(n)[8:32]) }

// prober sends the EIO campaign's probes, one at a time, over its own
// connection.
type prober struct {
	r     *rig
	first int // n before the first probe
	n     int
	c     *mllp.Client
}

// send sends the next probe; it says whether it was answered AA.
func (p *prober) send() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if p.c == nil {
		c, err := mllp.Dial(ctx, fmt.Sprintf("127.0.0.1:%d", p.r.mllpPort), nil)
		if err != nil {
			return false
		}
		p.c = c
	}
	p.n++
	id, msg := probe(p.n)
	ok := p.r.send(ctx, p.c, id, msg)
	if p.r.ledger.last(id) == 'U' {
		p.close()
	}
	return ok
}

func (p *prober) close() {
	if p.c != nil {
		p.c.Close()
		p.c = nil
	}
}

// consoleOrder finds the re-open and each "message spooled" line, so an AA
// is judged by the gateway's own order of events, not by clocks.
func TestConsoleOrder(t *testing.T) {
	v := &vm{lines: []string{
		`time=x level=DEBUG msg="message spooled" component=intake source=mllp-in control_id=L1-0000001 guid=g1 destinations=archive`,
		`time=x level=WARN msg="message refused (AE)" component=intake source=mllp-in control_id=L1-0000002 reason="…"`,
		`time=x level=WARN msg=alarm kind=storage_error detail="…"`,
		`time=x level=DEBUG msg=LED board=sim led=fault meaning="5 flashes, pause — FAULT: code 5, storage error"`,
		`time=x level=WARN msg="` + reopenLine + `" dir=/data/spool`,
		`time=x level=DEBUG msg="message spooled" component=intake source=mllp-in control_id=L1-0000003 guid=g3 destinations=archive`,
	}}
	o := consoleOrder(v)
	if o.reopen != 4 || o.spooled["L1-0000001"] != 0 || o.spooled["L1-0000003"] != 5 || len(o.spooled) != 2 {
		t.Errorf("got %+v, want re-open at 4 and L1-0000001, L1-0000003 spooled at 0 and 5", o)
	}
	if o.alarm != 2 || len(o.leds) != 1 || o.leds[0] != (ledLine{3, "5"}) {
		t.Errorf("got alarm at %d and LEDs %v, want 2 and code 5 at 3", o.alarm, o.leds)
	}
}
