package serialport

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/lis01"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

func newDestination(t *testing.T, framing string, tune func(*Config)) (*Destination, *health.Component, string) {
	t.Helper()
	link := filepath.Join(t.TempDir(), "ttyPUMP")
	comp := health.NewRegistry("test", "0", nil).Component(health.Destination, "pump", "serial")
	cfg := testConfig(link, framing)
	if tune != nil {
		tune(&cfg)
	}
	d, err := NewDestination("pump", cfg, Options{Log: testLog(), Health: comp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, comp, link
}

// device runs fn on its own goroutine until the device is yanked; cleanup
// yanks it and waits, proving the goroutine ends.
func runDevice(t *testing.T, dev *ptyDevice, fn func()) {
	var wg sync.WaitGroup
	wg.Go(fn)
	t.Cleanup(func() { dev.yank(); wg.Wait() })
}

func ackFor(raw []byte, code flow.Code, ctrl string) []byte {
	m, err := hl7.Parse(raw)
	if err != nil {
		panic(err)
	}
	a := hl7.ACK(m, code, 0, "test", "A1", time.Now())
	if ctrl != "" { // answer another control ID: a stale ACK
		a = bytes.Replace(a, []byte("|"+m.Header().ControlID), []byte("|"+ctrl), 1)
	}
	return a
}

// TestDestinationMLLP: the message goes out framed and byte-identical;
// AA/CA delivers, a stale ACK or a non-ACK frame is skipped, AE is a
// retryable error, AR a permanent one, silence an ack_timeout error.
func TestDestinationMLLP(t *testing.T) {
	d, comp, link := newDestination(t, FramingMLLP, func(c *Config) { c.ACKTimeout = units.Duration(300 * time.Millisecond) })
	dev := newPTY(t, link)
	received := make(chan []byte, 10)
	runDevice(t, dev, func() {
		r := mllp.NewReader(dev.m, 0)
		for {
			f, err := r.ReadFrame()
			if err != nil {
				return
			}
			received <- f.Data
			var out [][]byte
			switch {
			case bytes.Contains(f.Data, []byte("|MSG-0002|")):
				out = [][]byte{ackFor(f.Data, flow.Accepted, "OLD-1"), []byte("not an ACK"), ackFor(f.Data, flow.Accepted, "")}
			case bytes.Contains(f.Data, []byte("|MSG-0003|")):
				out = [][]byte{ackFor(f.Data, flow.RetryLater, "")}
			case bytes.Contains(f.Data, []byte("|MSG-0004|")):
				out = [][]byte{ackFor(f.Data, flow.Rejected, "")}
			case bytes.Contains(f.Data, []byte("|MSG-0005|")):
				// silence
			default:
				out = [][]byte{ackFor(f.Data, flow.Accepted, "")}
			}
			for _, a := range out {
				if mllp.WriteFrame(dev.m, a) != nil {
					return
				}
			}
		}
	})
	deliver := func(i int) error {
		return d.Deliver(t.Context(), &flow.Message{GUID: fmt.Sprintf("g%d", i), Raw: message(i)})
	}
	for i := 1; i <= 6; i++ {
		err := deliver(i)
		if got := <-received; !bytes.Equal(got, message(i)) {
			t.Fatalf("message %d arrived altered", i)
		}
		switch i {
		case 1, 2, 6:
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		case 3, 5:
			if err == nil || errors.Is(err, flow.ErrPermanent) {
				t.Fatalf("message %d: err = %v, want a retryable error", i, err)
			}
		case 4:
			if !errors.Is(err, flow.ErrPermanent) {
				t.Fatalf("message 4: err = %v, want ErrPermanent", err)
			}
		}
	}
	if n := comp.Counter(health.CounterStaleACKs); n != 1 {
		t.Fatalf("stale_acks = %d, want 1", n)
	}
	if n := comp.Counter(health.CounterMessages); n != 3 {
		t.Fatalf("messages = %d, want 3", n)
	}
}

// TestDestinationLIS01: 100 messages through a LIS01-A2 device (one NAKed
// once and resent), byte-identical; then the device is yanked: delivery
// fails and the destination is Missing until a device is back at the path,
// when it reopens and delivers.
func TestDestinationLIS01(t *testing.T) {
	d, comp, link := newDestination(t, FramingLIS01, func(c *Config) {})
	var mu sync.Mutex
	var got [][]byte
	device := func(dev *ptyDevice) {
		runDevice(t, dev, func() {
			rx := lis01.NewReceiver(dev.m, lis01.Options{Poll: 20 * time.Millisecond})
			naked := false
			for {
				msg, commit, err := rx.Receive(t.Context())
				if err != nil {
					return
				}
				if bytes.Contains(msg, []byte("|MSG-0042|")) && !naked {
					naked = true
					commit(false)
					continue
				}
				mu.Lock()
				got = append(got, msg)
				mu.Unlock()
				commit(true)
			}
		})
	}
	dev := newPTY(t, link)
	device(dev)
	for i := range 100 {
		if err := d.Deliver(t.Context(), &flow.Message{GUID: fmt.Sprint(i), Raw: message(i)}); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	mu.Lock()
	if len(got) != 100 {
		t.Fatalf("device got %d messages", len(got))
	}
	for i, m := range got {
		if !bytes.Equal(m, message(i)) {
			t.Fatalf("message %d arrived altered", i)
		}
	}
	mu.Unlock()
	if comp.State() != health.Up {
		t.Fatalf("state %s", comp.State())
	}

	dev.yank()
	if err := d.Deliver(t.Context(), &flow.Message{GUID: "x", Raw: message(100)}); err == nil {
		t.Fatal("delivered to a yanked device")
	}
	if s := comp.State(); s != health.Missing {
		t.Fatalf("state after yank = %s, want missing", s)
	}
	if err := d.Deliver(t.Context(), &flow.Message{GUID: "x", Raw: message(100)}); err == nil {
		t.Fatal("delivered with no device")
	}
	device(newPTY(t, link))
	if err := d.Deliver(t.Context(), &flow.Message{GUID: "x", Raw: message(100)}); err != nil {
		t.Fatalf("after replug: %v", err)
	}
	if comp.State() != health.Up || comp.Counter(health.CounterReopens) != 1 {
		t.Fatalf("state %s reopens %d", comp.State(), comp.Counter(health.CounterReopens))
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(got[len(got)-1], message(100)) {
		t.Fatal("message after replug not received")
	}
}

func TestDestinationRefusesUnsendable(t *testing.T) {
	d, _, link := newDestination(t, FramingLIS01, nil)
	newPTY(t, link)
	err := d.Deliver(t.Context(), &flow.Message{GUID: "x", Raw: []byte("MSH|^~\\&|A\nPID|1\n")})
	if !errors.Is(err, flow.ErrPermanent) {
		t.Fatalf("a message with LF: err = %v, want ErrPermanent", err)
	}
	d.Close()
	if err := d.Deliver(t.Context(), &flow.Message{GUID: "y", Raw: message(1)}); err == nil {
		t.Fatal("Deliver after Close succeeded")
	}
}
