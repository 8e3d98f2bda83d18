package route

import (
	_ "embed"

	"github.com/hl7edge/hl7edge/pipeline/component"
)

//go:embed sample.yaml
var sample []byte

// Register adds `type: rubbish` to r: a bin that accepts and drops what its
// match rules select. Bins are asked before every other destination (see
// Router), so they live with the router.
func Register(r *component.Types) {
	r.AddDestination(component.NewBin("rubbish", sample))
}
