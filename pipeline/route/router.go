package route

import "github.com/hl7edge/hl7edge/pipeline/hl7"

// Destination is what the router needs to know about one configured
// destination.
type Destination struct {
	Name    string
	Rubbish bool     // a rubbish bin: eats what it matches, delivers nothing
	Match   *Matcher // nil matches every message
}

// Decision is where one message goes.
type Decision struct {
	Rubbish      string   // the bin that ate the message, "" if none
	Destinations []string // matching destinations in configuration order
}

// Undeliverable reports that no bin ate the message and no destination wants
// it: the caller keeps it in the undeliverable store, never drops it.
func (d Decision) Undeliverable() bool { return d.Rubbish == "" && len(d.Destinations) == 0 }

// Router applies the destinations' rules. It is immutable and safe for
// concurrent use.
type Router struct {
	bins, dests []Destination
}

// New builds a router; dests is copied, in configuration order.
func New(dests []Destination) *Router {
	r := &Router{}
	for _, d := range dests {
		if d.Rubbish {
			r.bins = append(r.bins, d)
		} else {
			r.dests = append(r.dests, d)
		}
	}
	return r
}

// Route decides where m goes. Rubbish bins are asked first, in
// configuration order, and the first that matches eats the message; otherwise
// every matching destination gets it.
func (r *Router) Route(m *hl7.Message) Decision {
	for _, b := range r.bins {
		if b.Match.Match(m) {
			return Decision{Rubbish: b.Name}
		}
	}
	var d Decision
	for _, dest := range r.dests {
		if dest.Match.Match(m) {
			d.Destinations = append(d.Destinations, dest.Name)
		}
	}
	return d
}
