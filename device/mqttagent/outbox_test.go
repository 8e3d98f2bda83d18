package mqttagent

import (
	"fmt"
	"testing"
)

func TestOutboxBoundsAndOrder(t *testing.T) {
	t.Parallel()
	o := newOutbox(3, 2)
	for i := range 5 {
		o.put(outMsg{topic: "alarm", payload: fmt.Appendf(nil, "a%d", i), kind: kindAlarm})
		o.put(outMsg{topic: "health", kind: kindHealth})
		o.put(outMsg{topic: "res", payload: fmt.Appendf(nil, "r%d", i), kind: kindResponse})
	}
	h, al, rs := o.pending()
	if !h || al != 3 || rs != 2 {
		t.Fatalf("pending = %v %d %d, want true 3 2", h, al, rs)
	}
	if da, dr := o.dropped(); da != 2 || dr != 3 {
		t.Fatalf("dropped = %d %d, want 2 3", da, dr)
	}
	m, _ := o.pop()
	o.requeue(m) // put back ahead of the rest
	var got []string
	for {
		m, ok := o.pop()
		if !ok {
			break
		}
		got = append(got, m.topic+":"+string(m.payload))
	}
	want := []string{"res:r3", "res:r4", "alarm:a2", "alarm:a3", "alarm:a4", "health:"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
	// The wake signal is kept, never lost, and never blocks.
	select {
	case <-o.wake:
	default:
		t.Fatal("no wake signal after put")
	}
}

// TestOutboxStateLatest: a retained state keeps only its latest payload
// while offline, goes before alarms, and a requeued older one does not
// overwrite a newer one.
func TestOutboxStateLatest(t *testing.T) {
	t.Parallel()
	o := newOutbox(3, 2)
	o.put(outMsg{topic: "alarm", payload: []byte("a"), kind: kindAlarm})
	for _, p := range []string{"downloading", "verifying", "trial"} {
		o.put(outMsg{topic: "fw", payload: []byte(p), retained: true, kind: kindState})
	}
	m, _ := o.pop()
	if string(m.payload) != "trial" || !m.retained {
		t.Fatalf("first pop %q retained=%v, want the latest state, retained", m.payload, m.retained)
	}
	o.put(outMsg{topic: "fw", payload: []byte("committed"), retained: true, kind: kindState})
	o.requeue(m)
	m, _ = o.pop()
	if string(m.payload) != "committed" {
		t.Fatalf("after requeue of an older state: %q, want committed", m.payload)
	}
	if m, _ = o.pop(); string(m.payload) != "a" {
		t.Fatalf("then %q, want the alarm", m.payload)
	}
}
