package gateway

import (
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/storage"
)

// spoolQueue is the spool as a delivery worker's queue: the spool hands out
// its own Message, the pipeline speaks flow.Message (the same fields), so
// the spool depends on nothing above it.
type spoolQueue struct{ *storage.Spool }

func (q spoolQueue) Next(dest string, after uint64, max int) ([]flow.Message, error) {
	ms, err := q.Spool.Next(dest, after, max)
	out := make([]flow.Message, len(ms))
	for i, m := range ms {
		out[i] = flow.Message(m)
	}
	return out, err
}

// spoolHealth is the spool's part of a health snapshot.
func spoolHealth(sp *storage.Spool) func() health.SpoolSnapshot {
	return func() health.SpoolSnapshot {
		st := sp.Stats()
		hs := health.SpoolSnapshot{
			Messages: st.Messages, Bytes: st.Bytes, MaxBytes: st.MaxBytes, DiskBytes: st.DiskBytes,
			FreeDiskBytes: st.FreeDiskBytes, Undeliverable: st.Undeliverable, Error: st.Error, Reopens: st.Reopens,
			RetainedMessages: st.RetainedMessages, RetainedBytes: st.RetainedBytes, OldestRetained: st.OldestRetained, TraceBytes: st.TraceBytes,
			Full: st.Full, Queues: map[string]health.QueueStat{},
		}
		for d, ds := range st.Destinations {
			hs.Queues[d] = health.QueueStat{Queued: ds.Queued, QueuedAtStart: ds.QueuedAtStart, Dead: ds.Dead, OldestAgeSeconds: ds.OldestAgeSeconds}
		}
		return hs
	}
}
