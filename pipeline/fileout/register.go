package fileout

import (
	_ "embed"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

//go:embed sample.yaml
var sample []byte

// Register adds `type: file` destinations to r.
func Register(r *component.Types) {
	r.AddDestination(component.NewDestination("file", sample, func(c *Config, d component.Deps) (flow.Output, error) {
		return New(*c, d.Gates)
	}))
}

// Reach: a file destination reaches no host; it writes into its dir.
func (c *Config) Reach() component.Reach {
	return component.Reach{Files: []component.File{{Key: "dir", Path: c.Dir, Kind: component.FileOutput}}}
}
