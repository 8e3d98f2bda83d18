package gateway

import (
	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/fileout"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/route"
	"github.com/hl7edge/hl7edge/pipeline/serialport"
	"github.com/hl7edge/hl7edge/pipeline/webservice"
)

// DefaultTypes is every source and destination type the product ships: the
// one list to extend when a package adds a type (docs/extending.md).
func DefaultTypes() *component.Types {
	r := component.NewTypes()
	mllp.Register(r)       // mllp sources and destinations
	serialport.Register(r) // serial sources and destinations
	webservice.Register(r) // webservice sources and destinations
	fileout.Register(r)    // file destinations
	route.Register(r)      // rubbish bins
	return r
}

// Delivering lists the destinations that get a queue in the spool: all
// but the rubbish bins.
func Delivering(types *component.Types, dests []Destination) []string {
	if types == nil {
		types = DefaultTypes()
	}
	var out []string
	for _, d := range dests {
		if t, ok := types.Destination(d.Type); ok && !t.Discards {
			out = append(out, d.Name)
		}
	}
	return out
}
