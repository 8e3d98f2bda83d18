package deliver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/storage"
	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// scripted is a destination that fails while fail says so and records
// every attempt.
type scripted struct {
	mu       sync.Mutex
	attempts []string
	ok       []string
	fail     func(m *flow.Message) error
}

func (s *scripted) Deliver(_ context.Context, m *flow.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts = append(s.attempts, m.GUID)
	if s.fail != nil {
		if err := s.fail(m); err != nil {
			return err
		}
	}
	s.ok = append(s.ok, m.GUID)
	return nil
}

func (s *scripted) Close() error { return nil }

func (s *scripted) delivered() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ok...)
}

func setup(t *testing.T, n int) (*storage.Spool, []string) {
	t.Helper()
	sp, err := storage.Open(storage.Config{Dir: t.TempDir(), MaxBytes: 64 << 20}, storage.Options{Destinations: []string{"d"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	var guids []string
	for i := range n {
		r, err := sp.Append(context.Background(), storage.Entry{Source: "s", Raw: fmt.Appendf(nil, "MSH|^~\\&|A|B|C|D|1||ADT^A01|%d|P|2.5\r", i), Dests: []string{"d"}})
		if err != nil {
			t.Fatal(err)
		}
		guids = append(guids, r.GUID)
	}
	return sp, guids
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func run(t *testing.T, w *Worker) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}
}

func TestHeadOfLineRetryKeepsOrderAndGUID(t *testing.T) {
	sp, guids := setup(t, 5)
	failures := 0
	out := &scripted{fail: func(m *flow.Message) error {
		// The third message fails three times before it goes through.
		if m.GUID == guids[2] && failures < 3 {
			failures++
			return errors.New("peer said AE")
		}
		return nil
	}}
	comp := health.NewRegistry("", "", nil).Component(health.Destination, "d", "test")
	w := New("d", spoolQ{sp}, out, Options{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Health: comp})
	stop := run(t, w)
	defer stop()
	waitFor(t, "all delivered", func() bool { return len(out.delivered()) == 5 })
	got := out.delivered()
	for i := range guids {
		if got[i] != guids[i] {
			t.Fatalf("delivery order %v, want %v", got, guids)
		}
	}
	out.mu.Lock()
	att := append([]string(nil), out.attempts...)
	out.mu.Unlock()
	// Attempts: 0,1, then 2 four times (same GUID), then 3,4: never skipping ahead.
	want := []string{guids[0], guids[1], guids[2], guids[2], guids[2], guids[2], guids[3], guids[4]}
	if fmt.Sprint(att) != fmt.Sprint(want) {
		t.Fatalf("attempts %v\nwant     %v", att, want)
	}
	// The output sees the fifth message before the worker has recorded it
	// and counted it: wait for the count rather than race it.
	waitFor(t, "five deliveries counted", func() bool { return comp.Counter("delivered") == 5 })
	if comp.Counter("failures") != 3 || comp.Counter("delivered") != 5 || comp.State() != health.Up {
		t.Fatalf("health: failures %d delivered %d state %s", comp.Counter("failures"), comp.Counter("delivered"), comp.State())
	}
	waitFor(t, "queue empty", func() bool { return sp.Stats().Destinations["d"].Queued == 0 })
}

func TestMaxAttemptsMovesToDeadLettersAndGoesOn(t *testing.T) {
	sp, guids := setup(t, 3)
	out := &scripted{fail: func(m *flow.Message) error {
		if m.GUID == guids[0] {
			return fmt.Errorf("receiver said AR: %w", flow.ErrPermanent)
		}
		return nil
	}}
	var alarms []string
	var mu sync.Mutex
	w := New("d", spoolQ{sp}, out, Options{MaxAttempts: 2, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
		Alarm: func(kind, _ string) { mu.Lock(); alarms = append(alarms, kind); mu.Unlock() }})
	stop := run(t, w)
	defer stop()
	waitFor(t, "others delivered", func() bool { return len(out.delivered()) == 2 })
	dl, err := sp.DeadLetters("d")
	if err != nil || len(dl) != 1 || dl[0].GUID != guids[0] || dl[0].Attempts != 2 {
		t.Fatalf("dead letters %+v (%v)", dl, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(alarms) != 1 || alarms[0] != "dead_letter" {
		t.Fatalf("alarms %v", alarms)
	}
}

func TestPauseHoldsAndResumeDelivers(t *testing.T) {
	sp, _ := setup(t, 0)
	out := &scripted{}
	comp := health.NewRegistry("", "", nil).Component(health.Destination, "d", "test")
	w := New("d", spoolQ{sp}, out, Options{Health: comp})
	w.Pause()
	stop := run(t, w)
	defer stop()
	if _, err := sp.Append(context.Background(), storage.Entry{Source: "s", Raw: []byte("MSH|^~\\&|A\r"), Dests: []string{"d"}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if len(out.delivered()) != 0 || comp.State() != health.Paused {
		t.Fatalf("paused worker delivered %d (state %s)", len(out.delivered()), comp.State())
	}
	w.Resume()
	waitFor(t, "delivery after resume", func() bool { return len(out.delivered()) == 1 })
}

// A file destination on the spool's file system is refused its sync when
// another writer's failed (syncgate): the message never left the box, so
// that is no attempt of the destination's. With max_attempts: 1 it would
// otherwise go to dead letters for the spool's failed flush.
func TestAFailureElsewhereIsNotAnAttempt(t *testing.T) {
	sp, guids := setup(t, 1)
	gate, err := syncgate.NewGates().For(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	undone := 0
	out := &scripted{fail: func(*flow.Message) error {
		if undone > 0 {
			return nil
		}
		undone++
		since := gate.Epoch()
		_ = gate.Sync(gate.Epoch(), func() error { return syscall.EIO }) // the spool's flush fails
		err := gate.Sync(since, func() error { return nil })
		return fmt.Errorf("file destination /var/lib/hl7edge/out: %w: %w", flow.ErrNotAttempted, err)
	}}
	comp := health.NewRegistry("", "", nil).Component(health.Destination, "d", "test")
	w := New("d", spoolQ{sp}, out, Options{MaxAttempts: 1, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Health: comp})
	stop := run(t, w)
	defer stop()
	waitFor(t, "the message delivered or dead", func() bool {
		dl, _ := sp.DeadLetters("d")
		return len(out.delivered()) == 1 || len(dl) > 0
	})
	if dl, _ := sp.DeadLetters("d"); len(dl) > 0 {
		t.Fatalf("a message refused for another writer's failed sync went to dead letters (max_attempts: 1): %q", dl[0].Reason)
	}
	if got := out.delivered(); len(got) != 1 || got[0] != guids[0] {
		t.Fatalf("delivered %v, want %v", got, guids)
	}
	if comp.Counter("failures") != 0 {
		t.Fatalf("the destination counted %d failures for another writer's", comp.Counter("failures"))
	}
}
