package deliver

import (
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/storage"
)

// spoolQ is a real spool as a worker's queue, as the gateway wires it
// (gateway, spoolQueue): the spool speaks storage.Message.
type spoolQ struct{ *storage.Spool }

func (q spoolQ) Next(dest string, after uint64, max int) ([]flow.Message, error) {
	ms, err := q.Spool.Next(dest, after, max)
	out := make([]flow.Message, len(ms))
	for i, m := range ms {
		out[i] = flow.Message(m)
	}
	return out, err
}
