package fleetsim

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// Answer is how a simulated gateway treats commands.
type Answer int

// Ways to answer.
const (
	AnswerAll  Answer = iota // health and reping (of its destination "ehr") answered as a gateway does
	AnswerNone               // no command known: every one is rejected as unknown
	AnswerHang               // commands are accepted and never finish (a box that stopped responding)
)

// dispatcher is the commands sp answers, like the daemon's (device/appliance).
func (g *Gateway) dispatcher(reg *health.Registry) *command.Dispatcher {
	d := command.NewDispatcher(nil)
	sp := g.Spec
	switch sp.Answer {
	case AnswerNone:
		return d
	case AnswerHang:
		d.Register(command.Reping, func(ctx context.Context, _ json.RawMessage) (any, string, error) {
			<-ctx.Done()
			return nil, "", ctx.Err()
		})
		return d
	}
	d.RegisterPrivileged(command.FirmwareUpdate, g.firmwareUpdate)
	d.Register(command.Health, func(context.Context, json.RawMessage) (any, string, error) {
		return reg.Snapshot(), "", nil
	})
	d.Register(command.Reping, func(_ context.Context, raw json.RawMessage) (any, string, error) {
		var args struct {
			Name string `json:"name"`
		}
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &args); err != nil {
				return nil, "", fmt.Errorf("args: %w", err)
			}
		}
		if args.Name != "ehr" {
			return nil, "", fmt.Errorf("no web-service destination %q; this gateway has ehr", args.Name)
		}
		return nil, "will ping before the next post", nil
	})
	return d
}
