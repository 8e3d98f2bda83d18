package mllp

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/flow"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
)

//go:embed sample.yaml
var sample []byte

// Register adds `type: mllp` sources (a listener) and destinations (a
// client) to r.
func Register(r *component.Registry) {
	r.AddSource(component.NewSource("mllp", sample, func(c *ListenerConfig, d component.Deps) (component.Runner, error) {
		h := &intakeHandler{source: d.Name, intake: d.Intake, max: int64(c.MaxMessageBytes)}
		return NewServer(d.Name, *c, h, d.Log, d.Health)
	}))
	r.AddDestination(component.NewDestination("mllp", sample, func(c *DestinationConfig, d component.Deps) (flow.Output, error) {
		return NewOutput(d.Name, *c, d.Log, d.Health)
	}))
}

// intakeHandler answers each frame with intake's verdict.
type intakeHandler struct {
	source string
	intake flow.Intake
	max    int64
}

func (h *intakeHandler) HandleFrame(ctx context.Context, _ string, f Frame) []byte {
	if f.Oversize {
		reason := fmt.Sprintf("message of %d bytes exceeds max_message_bytes %d of source %q: split it, or raise the limit in the gateway's configuration", f.Size, h.max, h.source)
		return hl7.ACKUnparsed(f.Data, flow.Rejected, hl7.CodeInternalError, reason, "", time.Now())
	}
	return h.intake.Accept(ctx, flow.Inbound{Source: h.source, Raw: f.Data}).ACK
}
