package appliance

import (
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/storage"
)

// SpoolReport is `spool stats --json` and the spool-stats command's data
// (docs/mqtt-api.md): the spool's figures, with what only the running
// daemon knows added: each destination's lanes and each source's state.
// Its fields shadow storage.Stats' own destinations, so the JSON has one
// "destinations" object.
type SpoolReport struct {
	storage.Stats
	Destinations map[string]DestReport  `json:"destinations"`
	Sources      map[string]SourceStats `json:"sources,omitempty"`
}

// DestReport is one destination's queue, with its lanes when it has more
// than one.
type DestReport struct {
	storage.DestStats
	Lanes *health.LaneStat `json:"lanes,omitempty"`
}

// SourceStats is a source's state and counters (for a pull source: polls,
// messages, duplicates, exceptions), as `spool stats` shows them.
type SourceStats struct {
	State     string            `json:"state"`
	Counters  map[string]uint64 `json:"counters,omitempty"`
	LastError string            `json:"last_error,omitempty"`
}

func newSpoolReport(st storage.Stats) SpoolReport {
	rep := SpoolReport{Stats: st, Destinations: map[string]DestReport{}, Sources: map[string]SourceStats{}}
	for d, ds := range st.Destinations {
		rep.Destinations[d] = DestReport{DestStats: ds}
	}
	rep.Stats.Destinations = nil
	return rep
}
