package mllptest_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/mllp/mllptest"
)

func oru(ctl string) []byte {
	return []byte("MSH|^~\\&|GW|WARD3|LIS|LAB|20260101120000||ORU^R01^ORU_R01|" + ctl + "|P|2.5.1\r" +
		"PID|1||MRN1^^^H||DOE^JANE\r")
}

func dial(t *testing.T, addr string) *mllp.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := mllp.Dial(ctx, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// send returns MSA-1 and MSA-2 of the answer to msg.
func send(t *testing.T, c *mllp.Client, msg []byte) (code, acked string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Send(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	code, acked, _, err = hl7.ParseACK(ack)
	if err != nil {
		t.Fatalf("answer %q: %v", ack, err)
	}
	return code, acked
}

func TestReceiverAcksAndRecords(t *testing.T) {
	t.Parallel()
	rcv := mllptest.Start(t)
	a, b := dial(t, rcv.Addr), dial(t, rcv.Addr)
	for _, tc := range []struct {
		c        *mllp.Client
		msg      []byte
		code, id string
	}{
		{a, oru("A1"), "AA", "A1"},
		{b, oru("B1"), "AA", "B1"},
		{a, []byte("PID|1||no header\r"), "AR", ""},
		{a, oru("A2"), "AA", "A2"},
	} {
		if code, id := send(t, tc.c, tc.msg); code != tc.code || id != tc.id {
			t.Errorf("%q answered %s for %q, want %s for %q", tc.msg, code, id, tc.code, tc.id)
		}
	}
	got := rcv.Got()
	if rcv.Len() != 3 || len(got) != 3 {
		t.Fatalf("Len %d, Got %d messages; want 3 (the refused one is not recorded)", rcv.Len(), len(got))
	}
	for i, want := range [][]byte{oru("A1"), oru("B1"), oru("A2")} {
		if !bytes.Equal(got[i], want) {
			t.Errorf("message %d is %q, want %q", i, got[i], want)
		}
	}
	got[0] = nil
	if rcv.Got()[0] == nil {
		t.Error("changing the slice Got returned changed the receiver's record")
	}
}

func TestReceiverStopsWithTheTest(t *testing.T) {
	t.Parallel()
	var addr string
	var c *mllp.Client
	t.Run("inner", func(t *testing.T) {
		rcv := mllptest.Start(t)
		addr = rcv.Addr
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if c, err = mllp.Dial(ctx, addr, nil); err != nil {
			t.Fatal(err)
		}
		if code, _ := send(t, c, oru("X1")); code != "AA" {
			t.Fatalf("answered %s, want AA", code)
		}
	})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The open connection was closed under the client...
	if _, err := c.Send(ctx, oru("X2")); err == nil {
		t.Error("a connection to the receiver still answers after its test ended")
	}
	// ...and the port no longer accepts.
	if c2, err := mllp.Dial(ctx, addr, nil); err == nil {
		c2.Close()
		t.Errorf("%s still accepts connections after the test ended", addr)
	} else if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dial %s hung instead of being refused", addr)
	}
}
