package health

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for the registry.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func TestComponentStartsAndChangesState(t *testing.T) {
	clk := newClock()
	r := NewRegistry("gw-1", "1.2.3", clk.now)
	c := r.Component(Destination, "lab", "webservice")
	if c.Name() != "lab" || c.State() != Starting {
		t.Fatalf("new component: name %q state %q, want lab starting", c.Name(), c.State())
	}
	if again := r.Component(Destination, "lab", "other"); again != c {
		t.Fatal("registering the same kind and name twice made a second component")
	}
	if src := r.Component(Source, "lab", "mllp"); src == c {
		t.Fatal("a source and a destination of the same name are one component")
	}
	clk.add(time.Minute)
	c.SetState(Up)
	s0 := r.Snapshot()
	snap, ok := s0.Component(Destination, "lab")
	if !ok || snap.State != Up || !snap.Since.Equal(clk.now()) || snap.Type != "webservice" {
		t.Fatalf("snapshot after SetState(up): %+v (found %v)", snap, ok)
	}
	// Setting the same state again keeps the time it was entered.
	clk.add(time.Minute)
	c.SetState(Up)
	s1 := r.Snapshot()
	if snap, _ := s1.Component(Destination, "lab"); !snap.Since.Equal(clk.now().Add(-time.Minute)) {
		t.Fatalf("repeating the state moved since to %v", snap.Since)
	}
}

func TestFailRecordsErrorAndState(t *testing.T) {
	clk := newClock()
	r := NewRegistry("gw-1", "v", clk.now)
	c := r.Component(Destination, "lab", "webservice")
	c.SetState(Up)
	c.Fail("", "connection refused")
	s0 := r.Snapshot()
	snap, _ := s0.Component(Destination, "lab")
	if snap.State != Up || snap.LastError != "connection refused" || snap.LastErrorAt == nil || !snap.LastErrorAt.Equal(clk.now()) {
		t.Fatalf("Fail without a state: %+v", snap)
	}
	clk.add(time.Second)
	c.Fail(Down, "HTTP 503")
	s1 := r.Snapshot()
	snap, _ = s1.Component(Destination, "lab")
	if snap.State != Down || snap.LastError != "HTTP 503" || !snap.LastErrorAt.Equal(clk.now()) {
		t.Fatalf("Fail(down): %+v", snap)
	}
	if _, ok := s1.Component(Source, "lab"); ok {
		t.Fatal("a destination was found as a source")
	}
}

func TestCountersAndSnapshotIsACopy(t *testing.T) {
	r := NewRegistry("gw-1", "v", nil)
	c := r.Component(Source, "adt", "mllp")
	c.Add("in", 3)
	c.Add("in", 2)
	c.Add("refused", 1)
	if c.Counter("in") != 5 || c.Counter("refused") != 1 || c.Counter("never") != 0 {
		t.Fatalf("counters: in %d refused %d never %d", c.Counter("in"), c.Counter("refused"), c.Counter("never"))
	}
	s0 := r.Snapshot()
	snap, _ := s0.Component(Source, "adt")
	snap.Counters["in"] = 99
	if c.Counter("in") != 5 {
		t.Fatal("changing a snapshot's counters changed the component")
	}
}

func TestSnapshotMergesSpoolQueuesAndSortsKinds(t *testing.T) {
	clk := newClock()
	r := NewRegistry("gw-7", "2.0", clk.now)
	r.Component(Source, "adt", "mllp")
	r.Component(Destination, "lab", "webservice")
	r.Component(Destination, "archive", "file")
	r.Component(Service, "mqtt", "mqtt")
	r.SetSpoolProbe(func() SpoolSnapshot {
		return SpoolSnapshot{Messages: 12, Queues: map[string]QueueStat{"lab": {Queued: 10, Dead: 2, OldestAgeSeconds: 4.5}}}
	})
	r.SetClockProbe(func() bool { return true })
	labels := map[string]string{"site": "north"}
	r.SetLabels(labels)
	labels["site"] = "changed by the caller later"
	clk.add(90 * time.Second)
	s := r.Snapshot()
	if s.Device != "gw-7" || s.Version != "2.0" || s.UptimeSeconds != 90 || !s.ClockSynced || !s.Time.Equal(clk.now()) || s.Labels["site"] != "north" {
		t.Fatalf("header: %+v", s)
	}
	if len(s.Sources) != 1 || len(s.Destinations) != 2 || len(s.Services) != 1 || s.Spool.Messages != 12 {
		t.Fatalf("kinds: %d sources %d destinations %d services, spool %+v", len(s.Sources), len(s.Destinations), len(s.Services), s.Spool)
	}
	lab, _ := s.Component(Destination, "lab")
	if lab.Queued != 10 || lab.Dead != 2 || lab.OldestAgeSeconds != 4.5 {
		t.Fatalf("lab's queue was not merged: %+v", lab)
	}
	if arch, _ := s.Component(Destination, "archive"); arch.Queued != 0 {
		t.Fatalf("archive has a queue it was not given: %+v", arch)
	}
	if _, ok := s.Component(Service, "mqtt"); !ok {
		t.Fatal("service missing")
	}
	// The JSON shape is what MQTT health payloads and dashboards read.
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"device", "version", "time", "uptime_seconds", "clock_synced", "sources", "destinations", "services", "spool"} {
		if _, ok := m[k]; !ok {
			t.Errorf("health JSON lacks %q: %s", k, b)
		}
	}
	if _, ok := m["spool"].(map[string]any)["Queues"]; ok {
		t.Error("the spool's per-destination queues leak into JSON twice")
	}
}

func TestEmptySnapshotHasEmptyLists(t *testing.T) {
	b, err := json.Marshal(NewRegistry("gw", "v", nil).Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	if string(m["sources"]) != "[]" || string(m["destinations"]) != "[]" {
		t.Fatalf("an empty box must publish empty lists, not null: %s", b)
	}
}

func TestSubscribersHearStateChangesOnly(t *testing.T) {
	r := NewRegistry("gw", "v", nil)
	c := r.Component(Destination, "lab", "webservice")
	ch, cancel := r.Subscribe()
	c.Add("out", 1)
	c.Fail("", "no state change")
	select {
	case <-ch:
		t.Fatal("a counter or an error without a state change notified")
	default:
	}
	c.SetState(Up)
	c.SetState(Down)
	select {
	case <-ch:
	default:
		t.Fatal("a state change did not notify")
	}
	select {
	case <-ch:
		t.Fatal("two changes gave two signals; they should coalesce")
	default:
	}
	c.SetState(Down)
	select {
	case <-ch:
		t.Fatal("repeating a state notified")
	default:
	}
	r.Notify()
	select {
	case <-ch:
	default:
		t.Fatal("Notify did not reach the subscriber")
	}
	cancel()
	c.SetState(Up)
	select {
	case <-ch:
		t.Fatal("an unsubscribed channel was signalled")
	default:
	}
}

func TestStalledLoops(t *testing.T) {
	clk := newClock()
	r := NewRegistry("gw", "v", clk.now)
	a, b := r.Loop("deliver/lab"), r.Loop("intake/adt")
	_ = a
	clk.add(StallAge)
	if got := r.Stalled(StallAge); len(got) != 0 {
		t.Fatalf("loops at exactly the stall age count as stalled: %v", got)
	}
	clk.add(time.Second)
	b.Beat()
	if got := r.Snapshot().Stalled; len(got) != 1 || got[0] != "deliver/lab" {
		t.Fatalf("stalled = %v, want [deliver/lab]", got)
	}
	r.Loop("commit")
	clk.add(StallAge + time.Second)
	if got := r.Stalled(StallAge); fmt.Sprint(got) != "[commit deliver/lab intake/adt]" {
		t.Fatalf("stalled = %v, want sorted", got)
	}
	r.RemoveLoop("deliver/lab")
	r.RemoveLoop("commit")
	if got := r.Stalled(StallAge); fmt.Sprint(got) != "[intake/adt]" {
		t.Fatalf("after removal stalled = %v", got)
	}
}

// TestConcurrentUse is meant for -race: components report from many
// goroutines while consumers take snapshots and subscribe.
func TestConcurrentUse(t *testing.T) {
	r := NewRegistry("gw", "v", nil)
	r.SetSpoolProbe(func() SpoolSnapshot { return SpoolSnapshot{Queues: map[string]QueueStat{"d0": {Queued: 1}}} })
	const workers, rounds = 8, 500
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := r.Component(Destination, fmt.Sprintf("d%d", i%4), "webservice")
			l := r.Loop(fmt.Sprintf("loop%d", i))
			for j := range rounds {
				c.Add("out", 1)
				if j%2 == 0 {
					c.SetState(Up)
				} else {
					c.Fail(Down, "refused")
				}
				l.Beat()
			}
		}()
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		ch, cancel := r.Subscribe()
		defer cancel()
		for {
			select {
			case <-stop:
				return
			case <-ch:
				_ = r.Snapshot()
			default:
				_ = r.Snapshot()
				r.SetClockProbe(func() bool { return false })
			}
		}
	}()
	wg.Wait()
	close(stop)
	readers.Wait()
	var total uint64
	for _, d := range r.Snapshot().Destinations {
		total += d.Counters["out"]
	}
	if total != workers*rounds {
		t.Fatalf("counted %d deliveries, want %d", total, workers*rounds)
	}
}
