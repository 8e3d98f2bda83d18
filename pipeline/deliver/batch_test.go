package deliver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// batching is a destination that takes batches; while failBatches is set
// every batch fails, and single deliveries go through.
type batching struct {
	scripted
	bmu         sync.Mutex
	batches     [][]string
	failBatches bool
}

func (b *batching) DeliverBatch(_ context.Context, ms []*flow.Message) error {
	b.bmu.Lock()
	defer b.bmu.Unlock()
	var g []string
	for _, m := range ms {
		g = append(g, m.GUID)
	}
	b.batches = append(b.batches, g)
	if b.failBatches {
		return errors.New("disk full")
	}
	b.mu.Lock()
	b.ok = append(b.ok, g...)
	b.mu.Unlock()
	return nil
}

func TestBatchOutputTakesMessagesInOrderAndInBatches(t *testing.T) {
	sp, guids := setup(t, 40)
	out := &batching{}
	comp := health.NewRegistry("", "", nil).Component(health.Destination, "d", "test")
	stop := run(t, New("d", spoolQ{sp}, out, Options{Health: comp}))
	defer stop()
	waitFor(t, "all delivered", func() bool { return len(out.delivered()) == 40 })
	if got := out.delivered(); fmt.Sprint(got) != fmt.Sprint(guids) {
		t.Fatalf("delivery order %v\nwant %v", got, guids)
	}
	out.bmu.Lock()
	defer out.bmu.Unlock()
	for _, b := range out.batches {
		if len(b) > manyAtMost {
			t.Fatalf("a batch of %d messages, more than %d", len(b), manyAtMost)
		}
	}
	out.mu.Lock()
	singles := len(out.attempts)
	out.mu.Unlock()
	if singles > 1 || len(out.batches) == 0 || len(out.batches) >= 40 {
		t.Fatalf("%d batches and %d single deliveries for 40 messages: the destination was given them one at a time", len(out.batches), singles)
	}
	waitFor(t, "delivered counter at 40", func() bool { return comp.Counter("delivered") == 40 })
	waitFor(t, "queue empty", func() bool { return sp.Stats().Destinations["d"].Queued == 0 })
}

// A failed batch counts nothing as delivered: each message is then tried
// on its own, in order, and the spool forgets none of them.
func TestFailedBatchFallsBackToOneAtATime(t *testing.T) {
	sp, guids := setup(t, 10)
	out := &batching{failBatches: true}
	stop := run(t, New("d", spoolQ{sp}, out, Options{}))
	defer stop()
	waitFor(t, "all delivered", func() bool { return len(out.delivered()) == 10 })
	if got := out.delivered(); fmt.Sprint(got) != fmt.Sprint(guids) {
		t.Fatalf("delivery order %v\nwant %v", got, guids)
	}
	out.mu.Lock()
	singles := len(out.attempts)
	out.mu.Unlock()
	if singles != 10 {
		t.Fatalf("%d single deliveries after failed batches, want 10", singles)
	}
	waitFor(t, "queue empty", func() bool { return sp.Stats().Destinations["d"].Queued == 0 })
}

// busyQueue is a spool whose intake never goes quiet.
type busyQueue struct {
	Queue
	never chan struct{}
}

func (b busyQueue) IntakeIdle() (time.Duration, <-chan struct{}) { return 0, b.never }

// Intake that never pauses still leaves delivery its floor: the queue moves.
func TestDeliveryKeepsMovingUnderIntakeThatNeverPauses(t *testing.T) {
	for _, out := range []flow.Output{&scripted{}, &batching{}} {
		sp, guids := setup(t, 20)
		q := busyQueue{Queue: spoolQ{sp}, never: make(chan struct{})}
		stop := run(t, New("d", q, out, Options{}))
		var got func() []string
		switch o := out.(type) {
		case *scripted:
			got = o.delivered
		case *batching:
			got = o.delivered
		}
		waitFor(t, "all delivered", func() bool { return len(got()) == 20 })
		stop()
		if fmt.Sprint(got()) != fmt.Sprint(guids) {
			t.Fatalf("%T: delivery order %v\nwant %v", out, got(), guids)
		}
	}
}
