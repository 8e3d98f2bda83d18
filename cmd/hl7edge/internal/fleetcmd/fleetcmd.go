// Package fleetcmd sends one command to many gateways over MQTT and
// collects each one's final answer from cmd/res (docs/mqtt-api.md), signed
// per box when a key is given: a signed command names the device it is for.
package fleetcmd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetview"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/trust"
)

// Outcome is what became of the command on one box.
type Outcome string

// Outcomes, as the table and --json print them.
const (
	Answered Outcome = "answered"  // successful
	Failed   Outcome = "failed"    // tried and failed
	Refused  Outcome = "refused"   // rejected: not tried
	NoAnswer Outcome = "no answer" // no final answer within the timeout
	Skipped  Outcome = "skipped"   // offline: nothing sent
	NotSent  Outcome = "not sent"  // the broker did not take the command
)

// Result is one box's row.
type Result struct {
	Device    string          `json:"device"`
	Outcome   Outcome         `json:"outcome"`
	CommandID string          `json:"command_id,omitempty"`
	Detail    string          `json:"detail,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
}

// Signer signs one device's command; nil sends commands unsigned.
type Signer func(in trust.Inner) ([]byte, error)

// MinisignSigner signs with an operator's minisign key, as `hl7edge
// command sign` does.
func MinisignSigner(s *trust.Signer) Signer {
	return func(in trust.Inner) ([]byte, error) {
		comment := fmt.Sprintf("hl7edge command %s %s for %s until %s", in.ID, in.Name, in.Device, in.Expires.Format(time.RFC3339))
		return trust.Seal(in, func(m []byte) ([]byte, error) { return s.Sign(m, comment), nil })
	}
}

// Link sends commands and routes the answers back to their senders.
type Link struct {
	client mqtt.Client
	root   string

	mu       sync.Mutex
	waiting  map[string]chan command.Response // command id → its final answer
	accepted map[string]bool                  // command ids a box said it took
}

// Open subscribes to every gateway's cmd/res on client.
func Open(ctx context.Context, client mqtt.Client, topicRoot string) (*Link, error) {
	l := &Link{client: client, root: topicRoot, waiting: map[string]chan command.Response{}, accepted: map[string]bool{}}
	// QoS 1: an answer lost on the way would read as "no answer" and, for
	// a rollout, as a failure.
	filters := map[string]byte{topicRoot + "/+/cmd/res": 1}
	if err := fleetview.Subscribe(ctx, client, filters, func(_ mqtt.Client, m mqtt.Message) { l.onAnswer(m.Payload()) }); err != nil {
		return nil, fmt.Errorf("answers: %w", err)
	}
	return l, nil
}

func (l *Link) onAnswer(payload []byte) {
	var res command.Response
	if json.Unmarshal(payload, &res) != nil {
		return
	}
	l.mu.Lock()
	ch, ok := l.waiting[res.ID]
	if ok && res.Status == command.Accepted {
		l.accepted[res.ID] = true
		ok = false
	} else {
		delete(l.waiting, res.ID)
		delete(l.accepted, res.ID)
	}
	l.mu.Unlock()
	if ok {
		ch <- res // buffered: the handler never blocks
	}
}

// NewID makes a command id that says who sent it: fleet-<random>-<device>.
func NewID(device string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "fleet-" + hex.EncodeToString(b[:]) + "-" + device
}

// Send publishes req to device (sealed by sign when not nil) and returns
// the channel its final answer arrives on.
func (l *Link) Send(ctx context.Context, device string, req command.Request, sign Signer) (<-chan command.Response, error) {
	payload, err := json.Marshal(req)
	if sign != nil {
		payload, err = sign(trust.Inner{Request: req, Device: device})
	}
	if err != nil {
		return nil, err
	}
	ch := make(chan command.Response, 1)
	l.mu.Lock()
	l.waiting[req.ID] = ch
	l.mu.Unlock()
	if err := wait(ctx, l.client.Publish(l.root+"/"+device+"/cmd/req", 1, false, payload)); err != nil {
		l.forget(req.ID)
		return nil, err
	}
	return ch, nil
}

// forget stops waiting for id and says whether the box had accepted it.
func (l *Link) forget(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	acc := l.accepted[id]
	delete(l.waiting, id)
	delete(l.accepted, id)
	return acc
}

// Await waits for one answer until ctx ends, and says what it means.
func (l *Link) Await(ctx context.Context, device, id string, ch <-chan command.Response) Result {
	r := Result{Device: device, CommandID: id}
	select {
	case res := <-ch:
		r.Detail = res.Detail
		if res.Data != nil {
			r.Data, _ = json.Marshal(res.Data)
		}
		switch res.Status {
		case command.Successful:
			r.Outcome = Answered
		case command.Rejected:
			r.Outcome = Refused
		default:
			r.Outcome = Failed
		}
	case <-ctx.Done():
		r.Outcome = NoAnswer
		r.Detail = "not even accepted: the box may not have heard it"
		if l.forget(id) {
			r.Detail = "accepted, then no final answer: the box may still be running it"
		}
	}
	return r
}

// Plan is one command for many boxes.
type Plan struct {
	Name    string
	Args    json.RawMessage
	Sign    Signer        // nil: unsigned
	Timeout time.Duration // per box, from its send to its final answer
	Expires time.Duration // how long each command stays valid (0: 15 minutes)
}

// Run sends p to every device in online and waits for all answers; the
// devices in offline are listed as skipped. Results come in the order given.
func (l *Link) Run(ctx context.Context, p Plan, online, offline []string) []Result {
	if p.Expires <= 0 {
		p.Expires = 15 * time.Minute
	}
	out := make([]Result, len(online), len(online)+len(offline))
	var wg sync.WaitGroup
	for i, dev := range online {
		exp := time.Now().Add(p.Expires).UTC().Truncate(time.Second)
		req := command.Request{ID: NewID(dev), Name: p.Name, Args: p.Args, Expires: &exp}
		ch, err := l.Send(ctx, dev, req, p.Sign)
		if err != nil {
			out[i] = Result{Device: dev, Outcome: NotSent, CommandID: req.ID, Detail: err.Error()}
			continue
		}
		wg.Go(func() {
			wctx, cancel := context.WithTimeout(ctx, p.Timeout)
			defer cancel()
			out[i] = l.Await(wctx, dev, req.ID, ch)
		})
	}
	wg.Wait()
	for _, dev := range offline {
		out = append(out, Result{Device: dev, Outcome: Skipped, Detail: "offline: nothing sent"})
	}
	return out
}

// Summary counts the outcomes: "12 answered, 1 refused, 2 skipped".
func Summary(rs []Result) string {
	counts := map[Outcome]int{}
	for _, r := range rs {
		counts[r.Outcome]++
	}
	var parts []string
	for _, o := range []Outcome{Answered, Failed, Refused, NoAnswer, NotSent, Skipped} {
		if counts[o] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[o], o))
		}
	}
	return strings.Join(parts, ", ")
}

func wait(ctx context.Context, t mqtt.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}
