package webservice

import (
	_ "embed"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/flow"
)

//go:embed sample.yaml
var sample []byte

// Register adds `type: webservice` sources (the data source: ping, then
// mailbox, get, ack) and destinations (ping, then post) to r.
func Register(r *component.Registry) {
	src := component.NewSource("webservice", sample, func(c *SourceConfig, d component.Deps) (component.Runner, error) {
		return NewSource(d.Name, *c, d.Intake, options(d))
	})
	src.Liveness = true // beaten in every poll round and while it waits
	r.AddSource(src)
	r.AddDestination(component.NewDestination("webservice", sample, func(c *DestinationConfig, d component.Deps) (flow.Output, error) {
		o := options(d)
		o.Lanes = d.Lanes
		return NewDestination(d.Name, *c, o)
	}))
}

func options(d component.Deps) Options {
	return Options{Logger: d.Log, Health: d.Health, DeviceName: d.DeviceID, PMVersion: d.Version, Loop: d.Loop, Alarm: d.Alarm}
}

// MaxBackoffDefault is the destination's max_backoff when the
// destination-wide key is not set: the same key, read by this block with
// its own default.
func (c *DestinationConfig) MaxBackoffDefault() time.Duration { return c.MaxBackoff.D() }

// MaxLanes: posts of one session may be in flight side by side, each on its
// own kept-alive connection.
func (c *DestinationConfig) MaxLanes() int { return 64 }
