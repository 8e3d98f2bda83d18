package storage

import "time"

// Message is a spooled message as the spool hands it out. The pipeline's
// flow.Message has the same fields; the gateway converts, so the spool
// depends on nothing of the data path above it.
type Message struct {
	Seq      uint64    // spool order; strictly increasing in arrival order
	GUID     string    // assigned once when spooled and kept across every retry
	Source   string    // name of the source that received it
	Received time.Time // when it was committed to the spool
	Raw      []byte    // exactly as received
	Attempts int       // failed delivery attempts to its destination so far
}
