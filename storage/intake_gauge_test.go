package storage

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// IntakeIdle is what delivery gives way by: busy while an Append waits for
// its commit, and the busy channel closes once none does.
func TestIntakeIdleWhileAnAppendWaits(t *testing.T) {
	s := openTest(t, t.TempDir(), "a")
	defer s.Close()
	if _, busy := s.IntakeIdle(); busy != nil {
		t.Fatal("intake busy before any Append")
	}
	// Holding dbMu keeps the commit loop from committing, so the Append
	// below stays in flight until it is let go.
	s.dbMu.Lock()
	done := make(chan error, 1)
	go func() {
		_, err := s.Append(context.Background(), Entry{Source: "src", Raw: msg(1), Dests: []string{"a"}})
		done <- err
	}()
	var busy <-chan struct{}
	for busy == nil {
		runtime.Gosched()
		_, busy = s.IntakeIdle()
	}
	select {
	case <-busy:
		t.Fatal("busy channel closed while the Append still waits for its commit")
	default:
	}
	s.dbMu.Unlock()
	<-busy // closed once the Append has its answer
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, busy := s.IntakeIdle(); busy != nil {
		t.Fatal("intake still busy after the Append returned")
	}
}

// gather waits for the senders that were in flight together lately, and
// only for them, and never past its timer.
func TestGatherWaitsOnlyForSendersSeenTogether(t *testing.T) {
	s := &Spool{reqs: make(chan *appendReq, 8), stop: make(chan struct{})}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	one := []*appendReq{{}}

	// One sender at a time: no wait, whatever the last commit took.
	s.intake.begin()
	s.intake.end()
	if got := s.gather(one, timer, time.Hour); len(got) != 1 {
		t.Fatalf("a lone sender's group holds %d", len(got))
	}

	// Three were in flight at once: a group of one waits for two more.
	for range 3 {
		s.intake.begin()
	}
	for range 3 {
		s.intake.end()
	}
	s.reqs <- &appendReq{}
	s.reqs <- &appendReq{}
	s.reqs <- &appendReq{} // a fourth stays queued for the next group
	if got := s.gather(append([]*appendReq(nil), one...), timer, time.Hour); len(got) != 3 {
		t.Fatalf("group of %d, want the 3 seen in flight together", len(got))
	}
	if len(s.reqs) != 1 {
		t.Fatalf("%d left queued, want 1", len(s.reqs))
	}
	<-s.reqs

	// Nobody comes back: the timer ends the wait.
	if got := s.gather(append([]*appendReq(nil), one...), timer, time.Millisecond); len(got) != 1 {
		t.Fatalf("group of %d after the wait ran out, want 1", len(got))
	}
	// Closing the spool ends it too.
	close(s.stop)
	if got := s.gather(append([]*appendReq(nil), one...), timer, time.Hour); len(got) != 1 {
		t.Fatalf("group of %d at close, want 1", len(got))
	}
}

// Past a quarter of max_bytes the spool stops asking delivery to give way,
// so a long burst cannot fill it while delivery waits.
func TestIntakeIdleAskedNoMoreOnceAQuarterFull(t *testing.T) {
	s := openTest(t, t.TempDir(), "a") // max_bytes 64 MiB
	defer s.Close()
	big := make([]byte, 256<<10)
	for i := range big {
		big[i] = byte('A' + i%26)
	}
	hold := func() (busy <-chan struct{}, release func()) {
		s.dbMu.Lock()
		done := make(chan error, 1)
		go func() {
			_, err := s.Append(context.Background(), Entry{Source: "src", Raw: msg(0), Dests: []string{"a"}})
			done <- err
		}()
		for s.intake.n.Load() == 0 {
			runtime.Gosched()
		}
		_, busy = s.IntakeIdle()
		return busy, func() {
			s.dbMu.Unlock()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
	busy, release := hold()
	release()
	if busy == nil {
		t.Fatal("an almost empty spool did not ask delivery to give way to an Append in flight")
	}
	for i := 0; i < 70; i++ { // 70 x 256 KiB: past 16 MiB, a quarter of 64 MiB
		if _, err := s.Append(context.Background(), Entry{Source: "src", Raw: append(msg(i), big...), Dests: []string{"a"}}); err != nil {
			t.Fatal(err)
		}
	}
	busy, release = hold()
	release()
	if busy != nil {
		t.Fatal("a spool more than a quarter full still asked delivery to give way")
	}
}

// A peak is forgotten after a window or two, at once after an idle spell.
func TestPeakOfSendersIsForgotten(t *testing.T) {
	var a appendGauge
	t0 := time.Now()
	a.roll(t0)
	for range 5 {
		a.begin()
	}
	for range 5 {
		a.end()
	}
	if p := a.recentPeak(); p != 5 {
		t.Fatalf("peak %d, want 5", p)
	}
	a.roll(t0.Add(peakWindow)) // the window with the peak becomes the last one
	if p := a.recentPeak(); p != 5 {
		t.Fatalf("peak %d one window later, want 5", p)
	}
	a.roll(t0.Add(2 * peakWindow))
	if p := a.recentPeak(); p != 0 {
		t.Fatalf("peak %d two windows later, want 0", p)
	}
	for range 7 {
		a.begin()
	}
	for range 7 {
		a.end()
	}
	a.roll(t0.Add(time.Hour)) // idle for an hour: nothing to remember
	if p := a.recentPeak(); p != 0 {
		t.Fatalf("peak %d after an idle hour, want 0", p)
	}
}
