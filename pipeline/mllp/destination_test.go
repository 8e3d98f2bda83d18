package mllp

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// hl7Message is an ORU with a patient name that must never leak into
// errors or logs.
func hl7Message(ctl string, enhanced bool) *flow.Message {
	ack := ""
	if enhanced {
		ack = "|||AL|NE"
	}
	raw := "MSH|^~\\&|GW|WARD3|LIS|LAB|20240101120000||ORU^R01^ORU_R01|" + ctl + "|P|2.5" + ack + "\r" +
		"PID|1||MRN4711^^^H||DOEPATIENT^JANE\r" +
		"OBX|1|NM|GLU^Glucose||5.4|mmol/L\r"
	return &flow.Message{GUID: "guid-" + ctl, Raw: []byte(raw)}
}

// receiver is an MLLP peer built from the real listener and the real hl7
// ACK builder; answer decides each verdict by control ID.
type receiver struct {
	*testServer
	mu      sync.Mutex
	answer  func(ctl string) flow.Code
	wrongID atomic.Bool // answer with an ACK for another message
	silent  atomic.Bool // answer nothing
	got     []string    // control IDs received
}

func startReceiver(t *testing.T, cfg ListenerConfig) *receiver {
	r := &receiver{answer: func(string) flow.Code { return flow.Accepted }}
	r.testServer = startServer(t, cfg, HandlerFunc(func(_ context.Context, _ string, f Frame) []byte {
		m, err := hl7.Parse(f.Data)
		if err != nil {
			return hl7.ACKUnparsed(f.Data, flow.Rejected, hl7.ErrorCode(err), err.Error(), "rx-ack", time.Now())
		}
		ctl := m.Header().ControlID
		r.mu.Lock()
		r.got = append(r.got, ctl)
		answer := r.answer
		r.mu.Unlock()
		if r.silent.Load() {
			return nil
		}
		if r.wrongID.Load() {
			other, _ := hl7.Parse(hl7Message("someone-else", false).Raw)
			return hl7.ACK(other, flow.Accepted, 0, "", "rx-ack", time.Now())
		}
		return hl7.ACK(m, answer(ctl), hl7.CodeInternalError, "receiver says no to DOEPATIENT", "rx-"+ctl, time.Now())
	}))
	return r
}

func (r *receiver) setAnswer(f func(string) flow.Code) {
	r.mu.Lock()
	r.answer = f
	r.mu.Unlock()
}

func newOutput(t *testing.T, cfg DestinationConfig) *Output {
	t.Helper()
	o, err := NewOutput("lis", cfg, discardLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func checkNoContent(t *testing.T, err error) {
	t.Helper()
	if err != nil && (strings.Contains(err.Error(), "DOEPATIENT") || strings.Contains(err.Error(), "MRN4711")) {
		t.Errorf("error leaks message or ACK content: %v", err)
	}
}

func TestOutputVerdicts(t *testing.T) {
	rx := startReceiver(t, ListenerConfig{})
	comp := health.NewRegistry("", "", nil).Component(health.Destination, "lis", "mllp")
	o, err := NewOutput("lis", DestinationConfig{Address: rx.addr()}, discardLogger(), comp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	ctx := context.Background()

	for i, enhanced := range []bool{false, true, false} {
		if err := o.Deliver(ctx, hl7Message(fmt.Sprint("ok", i), enhanced)); err != nil {
			t.Fatalf("accepted message %d: %v", i, err)
		}
	}
	rx.setAnswer(func(string) flow.Code { return flow.RetryLater })
	for _, enhanced := range []bool{false, true} {
		err := o.Deliver(ctx, hl7Message("ae", enhanced))
		if err == nil || errors.Is(err, flow.ErrPermanent) {
			t.Fatalf("AE/CE answer: %v, want a retryable error", err)
		}
		checkNoContent(t, err)
	}
	rx.setAnswer(func(string) flow.Code { return flow.Rejected })
	for _, enhanced := range []bool{false, true} {
		err := o.Deliver(ctx, hl7Message("ar", enhanced))
		if !errors.Is(err, flow.ErrPermanent) {
			t.Fatalf("AR/CR answer: %v, want flow.ErrPermanent", err)
		}
		if !strings.Contains(err.Error(), "guid-ar") || !strings.Contains(err.Error(), "control ID ar") {
			t.Errorf("error does not name the GUID and control ID: %v", err)
		}
		checkNoContent(t, err)
	}
	// The four negative answers are counted as refusals (the FAULT LED's
	// code 2 reads them); nothing counted them before.
	if n := comp.Counter(health.CounterRefused); n != 4 {
		t.Errorf("refused = %d after two AE/CE and two AR/CR, want 4", n)
	}
	// Seven deliveries, one connection: it is kept between messages and
	// negative answers do not break it.
	if n := rx.comp.Counter(health.CounterConnectionsTotal); n != 1 {
		t.Errorf("receiver saw %d connections, want 1", n)
	}
}

func TestOutputMismatchedACKReconnects(t *testing.T) {
	rx := startReceiver(t, ListenerConfig{})
	o := newOutput(t, DestinationConfig{Address: rx.addr()})
	rx.wrongID.Store(true)
	err := o.Deliver(context.Background(), hl7Message("m1", false))
	if err == nil || errors.Is(err, flow.ErrPermanent) || !strings.Contains(err.Error(), "someone-else") {
		t.Fatalf("mismatched MSA-2: %v, want a retryable error naming the acked control ID", err)
	}
	rx.wrongID.Store(false)
	if err := o.Deliver(context.Background(), hl7Message("m1", false)); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if n := rx.comp.Counter(health.CounterConnectionsTotal); n != 2 {
		t.Errorf("receiver saw %d connections, want 2 (reconnect after the mismatch)", n)
	}
}

func TestOutputTimeoutThenRecovers(t *testing.T) {
	rx := startReceiver(t, ListenerConfig{})
	o := newOutput(t, DestinationConfig{Address: rx.addr(), Timeout: units.Duration(200 * time.Millisecond)})
	rx.silent.Store(true)
	err := o.Deliver(context.Background(), hl7Message("t1", false))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, flow.ErrPermanent) {
		t.Fatalf("silent receiver: %v, want a retryable deadline error", err)
	}
	rx.silent.Store(false)
	if err := o.Deliver(context.Background(), hl7Message("t1", false)); err != nil {
		t.Fatalf("after the timeout: %v", err)
	}
	if n := rx.comp.Counter(health.CounterConnectionsTotal); n != 2 {
		t.Errorf("receiver saw %d connections, want 2 (the timed-out one is never reused)", n)
	}
}

func TestOutputReconnectsAfterReceiverClosedIdleConnection(t *testing.T) {
	rx := startReceiver(t, ListenerConfig{IdleTimeout: units.Duration(50 * time.Millisecond)})
	o := newOutput(t, DestinationConfig{Address: rx.addr()})
	if err := o.Deliver(context.Background(), hl7Message("i1", false)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "receiver closing the idle connection", func() bool { return rx.comp.Counter(health.CounterIdleClosed) == 1 })
	// The stale connection is noticed and replaced within this one call.
	if err := o.Deliver(context.Background(), hl7Message("i2", false)); err != nil {
		t.Fatalf("delivery after the receiver closed the connection: %v", err)
	}
	if n := rx.comp.Counter(health.CounterConnectionsTotal); n != 2 {
		t.Errorf("receiver saw %d connections, want 2", n)
	}
}

func TestOutputReceiverDown(t *testing.T) {
	rx := startReceiver(t, ListenerConfig{})
	addr := rx.addr()
	rx.stop(t)
	o := newOutput(t, DestinationConfig{Address: addr, Timeout: units.Duration(2 * time.Second)})
	err := o.Deliver(context.Background(), hl7Message("d1", false))
	if err == nil || errors.Is(err, flow.ErrPermanent) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("receiver down: %v, want a retryable error naming %s", err, addr)
	}
	o.Close()
	if err := o.Deliver(context.Background(), hl7Message("d2", false)); err == nil {
		t.Fatal("Deliver after Close succeeded")
	}
}

func TestOutputUnreadableMessageIsPermanent(t *testing.T) {
	rx := startReceiver(t, ListenerConfig{})
	o := newOutput(t, DestinationConfig{Address: rx.addr()})
	err := o.Deliver(context.Background(), &flow.Message{GUID: "g-bad", Raw: []byte("PID|1||MRN4711\r")})
	if !errors.Is(err, flow.ErrPermanent) {
		t.Fatalf("unparsable message: %v, want flow.ErrPermanent", err)
	}
	checkNoContent(t, err)
}

func TestOutputTLSWithClientCert(t *testing.T) {
	dir := t.TempDir()
	ca, err := throwawayca.NewCA("lis CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue("lis.test", "127.0.0.1", "lis.test")
	if err != nil {
		t.Fatal(err)
	}
	sf, err := ca.WriteFiles(dir, "srv", srv)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Issue("gateway")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := ca.WriteFiles(dir, "cli", cli)
	if err != nil {
		t.Fatal(err)
	}
	rx := startReceiver(t, ListenerConfig{TLS: ServerTLS{CertFile: sf.Cert, KeyFile: sf.Key, ClientCAFile: sf.CA}})

	good := newOutput(t, DestinationConfig{Address: rx.addr(), TLS: ClientTLS{CAFile: cf.CA, CertFile: cf.Cert, KeyFile: cf.Key, ServerName: "lis.test"}})
	if err := good.Deliver(context.Background(), hl7Message("tls1", false)); err != nil {
		t.Fatalf("TLS delivery with client certificate: %v", err)
	}
	noCert := newOutput(t, DestinationConfig{Address: rx.addr(), TLS: ClientTLS{CAFile: cf.CA}, Timeout: units.Duration(5 * time.Second)})
	if err := noCert.Deliver(context.Background(), hl7Message("tls2", false)); err == nil {
		t.Fatal("TLS delivery without the required client certificate succeeded")
	}
	systemRootsOnly := newOutput(t, DestinationConfig{Address: rx.addr(), TLS: ClientTLS{Enabled: true, CertFile: cf.Cert, KeyFile: cf.Key}, Timeout: units.Duration(5 * time.Second)})
	if err := systemRootsOnly.Deliver(context.Background(), hl7Message("tls3", false)); err == nil {
		t.Fatal("TLS delivery to a server signed by an unknown CA succeeded: verification is off")
	}
	rx.mu.Lock()
	defer rx.mu.Unlock()
	if len(rx.got) != 1 || rx.got[0] != "tls1" {
		t.Errorf("receiver got %v, want only tls1", rx.got)
	}
}

// TestOutputConnectionsDeliverSideBySide: with connections: 3, three
// deliveries are in flight at once, each on its own connection. The
// receiver answers none until it holds three messages, so with one
// connection this would time out.
func TestOutputConnectionsDeliverSideBySide(t *testing.T) {
	var mu sync.Mutex
	held := 0
	all := make(chan struct{})
	srv := startServer(t, ListenerConfig{Listen: "127.0.0.1:0"}, HandlerFunc(func(ctx context.Context, _ string, f Frame) []byte {
		mu.Lock()
		held++
		if held == 3 {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-ctx.Done():
			return nil
		}
		m, _ := hl7.Parse(f.Data)
		return hl7.ACK(m, flow.Accepted, 0, "", "rx", time.Now())
	}))
	out, err := NewOutput("lis", DestinationConfig{Address: srv.addr(), Connections: 3, Timeout: units.Duration(10 * time.Second)}, discardLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range 3 {
		wg.Go(func() { errs[i] = out.Deliver(context.Background(), hl7Message(fmt.Sprintf("C%d", i), false)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("delivery %d: %v", i, err)
		}
	}
	out.mu.Lock()
	n := len(out.open)
	out.mu.Unlock()
	if n != 3 {
		t.Errorf("%d connections open, want 3", n)
	}
}

func TestConnectionsValidate(t *testing.T) {
	for n, ok := range map[int]bool{0: true, 1: true, 64: true, 65: false, -1: false} {
		c := DestinationConfig{Address: "10.0.0.1:2575", Connections: n}
		c.SetDefaults()
		if err := c.Validate(); (err == nil) != ok {
			t.Errorf("connections %d: %v", n, err)
		}
		if ok && c.MaxLanes() != max(n, 1) {
			t.Errorf("connections %d: MaxLanes %d", n, c.MaxLanes())
		}
	}
}
