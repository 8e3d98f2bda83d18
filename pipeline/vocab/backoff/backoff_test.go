package backoff

import (
	"testing"
	"time"
)

func TestCeilingDoublesToMaxAndResets(t *testing.T) {
	b := &Backoff{Min: time.Second, Max: 10 * time.Second, Rand: func() float64 { return 0.999999 }}
	var got []time.Duration
	for range 6 {
		got = append(got, b.Next().Round(time.Second))
	}
	want := []time.Duration{1, 2, 4, 8, 10, 10}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("wait %d = %v, want %v (all: %v)", i, got[i], want[i]*time.Second, got)
		}
	}
	b.Reset()
	if c := b.Ceiling(); c != time.Second {
		t.Fatalf("after reset ceiling %v", c)
	}
}

func TestFullJitterDrawsBelowCeiling(t *testing.T) {
	b := &Backoff{Min: time.Second, Max: time.Minute, Rand: func() float64 { return 0.25 }}
	b.Next()
	if d := b.Next(); d != 500*time.Millisecond {
		t.Fatalf("second wait %v, want a quarter of 2s", d)
	}
}
