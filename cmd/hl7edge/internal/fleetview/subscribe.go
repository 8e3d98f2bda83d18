package fleetview

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// subscribeTries is how many SUBSCRIBEs a filter the broker refuses gets,
// the n-th after a pause of subscribeBackoff doubled n-1 times (at most
// subscribeMaxPause): about 7 s in all. A refusal can pass: mochi refuses
// a SUBSCRIBE whose packet id equals one of its own unacknowledged
// deliveries to the same client (return code 0x91, "packet identifier in
// use"), which a stream of answers on a loaded machine keeps up for a
// while; a new SUBSCRIBE carries a new id. An ACL's refusal stays, and the
// last try reports it.
const (
	subscribeTries    = 8
	subscribeBackoff  = 100 * time.Millisecond
	subscribeMaxPause = 2 * time.Second
)

// Subscribe subscribes client to filters (each at its QoS) with cb (nil:
// the client's default handler) and returns once the broker has granted
// every one. paho reports a refused filter only in the SUBACK's return
// codes, never as an error: unchecked, a refusal reads as a fleet that has
// gone quiet, and a rollout waits out its whole deadline for nothing.
func Subscribe(ctx context.Context, client mqtt.Client, filters map[string]byte, cb mqtt.MessageHandler) error {
	todo := filters
	var refused []string
	for try := range subscribeTries {
		if try > 0 {
			select {
			case <-time.After(min(subscribeBackoff<<(try-1), subscribeMaxPause)):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		t := client.SubscribeMultiple(todo, cb)
		if err := wait(ctx, t); err != nil {
			return fmt.Errorf("subscribe to %s: %w", names(todo), err)
		}
		granted := t.(*mqtt.SubscribeToken).Result()
		again := map[string]byte{}
		refused = refused[:0]
		for f, qos := range todo {
			if code, ok := granted[f]; !ok || code > 2 {
				again[f] = qos
				refused = append(refused, fmt.Sprintf("%s (return code %#x)", f, code))
			}
		}
		if len(again) == 0 {
			return nil
		}
		todo = again
	}
	slices.Sort(refused)
	return fmt.Errorf("the broker refused the subscription to %s %d times; its ACL must let this user read these topics (docs/operations.md, Fleet operations)",
		strings.Join(refused, ", "), subscribeTries)
}

func names(filters map[string]byte) string {
	var out []string
	for f := range filters {
		out = append(out, f)
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}
