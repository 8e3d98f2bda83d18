package gateway

import (
	"fmt"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/route"
	"github.com/hl7edge/hl7edge/storage"
)

// Rerouter routes a stored message by the configuration's match rules, as
// intake would now: the destinations that take it, or discard when a
// rubbish bin does. A message that cannot be parsed goes nowhere.
type Rerouter func(raw []byte) (dests []string, discard bool)

// NewRerouter compiles the destinations' match rules into a Rerouter.
func NewRerouter(types *component.Types, dests []Destination) (Rerouter, error) {
	if types == nil {
		types = DefaultTypes()
	}
	var routes []route.Destination
	for _, d := range dests {
		m, err := route.Compile(d.Match)
		if err != nil {
			return nil, fmt.Errorf("destination %q: %w", d.Name, err)
		}
		t, _ := types.Destination(d.Type)
		routes = append(routes, route.Destination{Name: d.Name, Rubbish: t.Discards, Match: m})
	}
	return rerouter(route.New(routes)), nil
}

func rerouter(r *route.Router) Rerouter {
	return func(raw []byte) ([]string, bool) {
		m, err := hl7.Parse(raw)
		if err != nil {
			return nil, false
		}
		d := r.Route(m)
		return d.Destinations, d.Rubbish != ""
	}
}

// Undeliverable lists the messages that matched no destination, oldest
// first, up to limit.
func (g *Gateway) Undeliverable(limit int) ([]storage.DeadLetter, error) {
	if g.unreadable != nil {
		return nil, g.unreadable
	}
	return g.spool.Undeliverable(limit)
}

// RetryUndeliverable routes undeliverable messages (all, or the given
// GUIDs) again by the rules the gateway runs with now.
func (g *Gateway) RetryUndeliverable(guids ...string) (storage.Rerouted, error) {
	if g.unreadable != nil {
		return storage.Rerouted{}, g.unreadable
	}
	return g.spool.RetryUndeliverable(g.reroute, guids...)
}

// PurgeUndeliverable deletes undeliverable messages (all, or the given GUIDs).
func (g *Gateway) PurgeUndeliverable(guids ...string) (int, error) {
	if g.unreadable != nil {
		return 0, g.unreadable
	}
	return g.spool.PurgeUndeliverable(guids...)
}
