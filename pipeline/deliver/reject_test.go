package deliver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// refusing fails the message with GUID bad as a receiver's AR does.
func refusing(bad *string) *scripted {
	return &scripted{fail: func(m *flow.Message) error {
		if m.GUID == *bad {
			return fmt.Errorf("receiver answered AR: %w", flow.ErrPermanent)
		}
		return nil
	}}
}

// TestOnRejectDeadMovesARefusedMessageAtOnce: with on_reject: dead a
// refused message goes to the dead letters at its first refusal, with the
// reason, even with max_attempts 0, and the ones behind it are delivered.
func TestOnRejectDeadMovesARefusedMessageAtOnce(t *testing.T) {
	sp, guids := setup(t, 3)
	out := refusing(&guids[0])
	var mu sync.Mutex
	var alarms []string
	comp := health.NewRegistry("", "", nil).Component(health.Destination, "d", "test")
	w := New("d", spoolQ{sp}, out, Options{OnReject: OnRejectDead, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Health: comp,
		Alarm: func(kind, _ string) { mu.Lock(); alarms = append(alarms, kind); mu.Unlock() }})
	stop := run(t, w)
	defer stop()
	waitFor(t, "the others delivered", func() bool { return len(out.delivered()) == 2 })
	dl, err := sp.DeadLetters("d")
	if err != nil || len(dl) != 1 || dl[0].GUID != guids[0] || dl[0].Attempts != 1 || !strings.Contains(dl[0].Reason, "on_reject: dead") {
		t.Fatalf("dead letters %+v (%v), want %s after 1 attempt, reason naming on_reject", dl, err, guids[0])
	}
	waitFor(t, "the destination up again", func() bool { return comp.State() == health.Up })
	mu.Lock()
	defer mu.Unlock()
	if len(alarms) != 1 || alarms[0] != health.AlarmDeadLetter {
		t.Errorf("alarms %v, want one dead_letter", alarms)
	}
}

// TestOnRejectHoldHoldsUntilSkipped: by default a refused message holds the
// destination, which says so (state held, the command that moves it
// aside); Skip moves it to the dead letters with the operator's reason and
// the queue behind it flows, in order.
func TestOnRejectHoldHoldsUntilSkipped(t *testing.T) {
	sp, guids := setup(t, 3)
	out := refusing(&guids[0])
	reg := health.NewRegistry("", "", nil)
	comp := reg.Component(health.Destination, "d", "test")
	w := New("d", spoolQ{sp}, out, Options{MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond, Health: comp})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := w.Skip(ctx, "before anything failed"); !errors.Is(err, ErrNothingToSkip) {
		t.Errorf("Skip with nothing failing: %v, want ErrNothingToSkip", err)
	}
	stop := run(t, w)
	defer stop()
	waitFor(t, "the destination held", func() bool { return comp.State() == health.Held })
	if len(out.delivered()) != 0 {
		t.Fatalf("delivered %v past a refused message", out.delivered())
	}
	if e := lastError(reg); !strings.Contains(e, guids[0]) || !strings.Contains(e, "hl7edge spool skip --destination d") {
		t.Errorf("last error %q: want the held message's GUID and the command that moves it aside", e)
	}
	got, err := w.Skip(ctx, "wrong patient ID, ticket 4711")
	if err != nil || got != guids[0] {
		t.Fatalf("Skip: %q, %v; want %s", got, err, guids[0])
	}
	waitFor(t, "the rest delivered", func() bool { return len(out.delivered()) == 2 })
	if d := out.delivered(); d[0] != guids[1] || d[1] != guids[2] {
		t.Errorf("delivered %v, want %v in order", d, guids[1:])
	}
	dl, err := sp.DeadLetters("d")
	if err != nil || len(dl) != 1 || dl[0].GUID != guids[0] || !strings.Contains(dl[0].Reason, "ticket 4711") {
		t.Fatalf("dead letters %+v (%v)", dl, err)
	}
	waitFor(t, "the destination up again", func() bool { return comp.State() == health.Up })
}

func lastError(r *health.Registry) string {
	s := r.Snapshot()
	c, _ := s.Component(health.Destination, "d")
	return c.LastError
}
