package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestTakeGivesDistinctBindablePortsOutsideTheEphemeralRange(t *testing.T) {
	lo, hi := candidates()
	seen := map[int]bool{}
	for i := 0; i < 50; i++ {
		p := Take(t)
		if p < lo || p >= hi {
			t.Fatalf("port %d outside %d–%d", p, lo, hi-1)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice while still held", p)
		}
		seen[p] = true
	}
	for p := range seen {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d handed out but not bindable: %v", p, err)
		}
		_ = l.Close()
	}
}

// Two ports this test holds, so no other test touches them meanwhile.
func twoPorts(t *testing.T) (int, int) { return Take(t), Take(t) }

func TestPickSkipsAPortAnotherTestHolds(t *testing.T) {
	p1, p2 := twoPorts(t)
	dir := t.TempDir()
	held, ok := reserve(dir, p1)
	if !ok {
		t.Fatal("could not take the first lock in a fresh directory")
	}
	defer held.Close()
	if _, ok := reserve(dir, p1); ok {
		t.Fatalf("port %d reserved a second time while held", p1)
	}
	got, lock := pick(dir, []int{p1, p2})
	if lock == nil || got != p2 {
		t.Fatalf("pick = %d, want %d: %d is held", got, p2, p1)
	}
	_ = lock.Close()
}

func TestPickSkipsAPortSomethingListensOn(t *testing.T) {
	p1, p2 := twoPorts(t)
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p1)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got, lock := pick(t.TempDir(), []int{p1, p2})
	if lock == nil || got != p2 {
		t.Fatalf("pick = %d, want %d: something listens on %d", got, p2, p1)
	}
	_ = lock.Close()
	if got, lock := pick(t.TempDir(), []int{p1}); lock != nil {
		t.Fatalf("pick = %d with the only port taken, want none", got)
	}
}

func TestLockIsGivenBackWhenClosed(t *testing.T) {
	p := Take(t)
	dir := t.TempDir()
	f, ok := reserve(dir, p)
	if !ok {
		t.Fatal("first reserve failed")
	}
	_ = f.Close()
	f, ok = reserve(dir, p)
	if !ok {
		t.Fatal("a closed lock was not given back: a dead test binary would keep its ports")
	}
	_ = f.Close()
}
