package serialport

import (
	_ "embed"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

//go:embed sample.yaml
var sample []byte

// Register adds `type: serial` sources and destinations to r.
func Register(r *component.Types) {
	src := component.NewSource("serial", sample, func(c *Config, d component.Deps) (component.Runner, error) {
		return NewSource(d.Name, *c, d.Intake, Options{Log: d.Log, Health: d.Health, Loop: d.Loop})
	})
	src.Liveness = true // beaten at every read poll and every reopen attempt
	r.AddSource(src)
	r.AddDestination(component.NewDestination("serial", sample, func(c *Config, d component.Deps) (flow.Output, error) {
		return NewDestination(d.Name, *c, Options{Log: d.Log, Health: d.Health})
	}))
}

// Reach: a serial port is wired to this box; it reaches no host.
func (c *Config) Reach() component.Reach {
	return component.Reach{Files: []component.File{{Key: "device", Path: c.Device, Kind: component.FileDevice}}}
}
