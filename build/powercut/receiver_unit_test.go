package powercut

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/mllp"
)

// The host's receiver answers AA, or AR to what it refuses, records both,
// takes a 4 MiB report, and goes down and comes back on the same port.
func TestReceiverRefusesAndGoesDown(t *testing.T) {
	rc := newReceiver(t, func(id string) bool { return id == "C1-0000004" })
	rc.setUp(true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := fmt.Sprintf("127.0.0.1:%d", rc.port)
	c, err := mllp.Dial(ctx, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, n := range []int{1, 4, 8} {
		id, msg := message(1, n)
		if n == largeEvery {
			for len(msg) < 3<<20 { // a report near the top of the range
				id, msg = message(1, n)
			}
		}
		ack, err := c.Send(ctx, msg)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		want[id] = map[bool]string{true: "AR", false: "AA"}[id == "C1-0000004"]
		if got := ackCode(ack); got != want[id] {
			t.Errorf("%s answered %s, want %s", id, got, want[id])
		}
	}
	c.Close()
	for _, a := range rc.arrivals() {
		if want[a.ID] != a.Code {
			t.Errorf("recorded %s as %s, want %s", a.ID, a.Code, want[a.ID])
		}
		delete(want, a.ID)
	}
	if len(want) > 0 {
		t.Errorf("not recorded: %v", want)
	}
	rc.setUp(false)
	if c, err := mllp.Dial(ctx, addr, nil); err == nil {
		c.Close()
		t.Fatal("the receiver is down but took a connection")
	}
	rc.setUp(true)
	c, err = mllp.Dial(ctx, addr, nil)
	if err != nil {
		t.Fatalf("the receiver did not come back: %v", err)
	}
	c.Close()
}
