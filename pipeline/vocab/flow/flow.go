// Package flow holds the contracts between the parts of the pipeline: what a
// source hands to intake, what intake answers, and what a destination is given
// to deliver. It has no behaviour of its own so that every component can
// depend on it without depending on each other.
package flow

import (
	"context"
	"errors"
	"time"
)

// Message is one spooled HL7 message as a destination sees it.
type Message struct {
	Seq      uint64    // spool order; strictly increasing in arrival order
	GUID     string    // assigned once when spooled and kept across every retry
	Source   string    // name of the source that received it
	Received time.Time // when it was committed to the spool
	Raw      []byte    // exactly as received: segments separated by CR, no framing
	Attempts int       // failed delivery attempts to this destination so far
}

// Output delivers messages to one destination. Deliver returns nil only once
// the destination has taken responsibility for the message; any error means
// the same message will be offered again later, so an Output must tolerate
// being handed a message it may already have delivered (the GUID says so).
type Output interface {
	Deliver(ctx context.Context, m *Message) error
	Close() error
}

// BatchOutput is an Output that can take several messages at once for fewer
// disk flushes than taking them one by one. DeliverBatch returns nil only
// once the destination has taken responsibility for every message; on an
// error none counts as delivered, and each is offered again, one at a time.
type BatchOutput interface {
	Output
	DeliverBatch(ctx context.Context, ms []*Message) error
}

// Inbound is one message offered to intake by a source.
type Inbound struct {
	Source string // source name, for routing, health and logs
	Raw    []byte // the message without transport framing
	// RemoteID, when set, is the identifier a pull source was given by its
	// peer. Intake remembers it atomically with the stored message so that a
	// message offered again (after a lost ack) is not stored twice.
	RemoteID string
	// Peer is where the message came from, as its trace keeps it: the
	// sender's host:port over MLLP, "serial:" and the device for a serial
	// port, the web service's scheme://host for a pull source.
	Peer string
}

// Code is intake's verdict on one message, independent of the HL7 acknowledgement
// mode (the ACK bytes carry AA/AE/AR or CA/CE/CR as the message asked).
type Code string

// The names say what the sender should do; the values are the HL7 codes of
// original acknowledgement mode (enhanced mode sends CA, CE, CR).
const (
	Accepted   Code = "AA" // durably spooled (or eaten by a rubbish bin); the sender may forget it
	RetryLater Code = "AE" // not stored through no fault of the message (spool full or failing); send it again later
	Rejected   Code = "AR" // the message itself is unacceptable; retrying it unchanged will not help
)

// Outcome is intake's answer to one Inbound.
type Outcome struct {
	Code      Code
	Reason    string // why, for AE and AR: names the thing, the limit and what to do; never message content
	GUID      string // set when the message was spooled
	ControlID string // MSH-10, when it could be read
	Duplicate bool   // RemoteID was already stored; nothing new was written
	ACK       []byte // the HL7 acknowledgement to send back, when one could be built
}

// Intake takes messages from sources. Accept returns only after the message
// is durably committed (Accepted) or definitely not stored (RetryLater, Rejected).
type Intake interface {
	Accept(ctx context.Context, in Inbound) Outcome
}

// ErrPermanent marks a delivery error that retrying the same message cannot
// fix (for example the receiver rejected it with AR). Workers still keep the
// message first in line unless max_attempts moves it to dead letters, but
// they log it at a higher level.
var ErrPermanent = errors.New("permanent delivery failure")

// ErrNotAttempted marks a delivery error that says nothing about the message
// or the receiver: what the destination wrote was undone by a failure
// elsewhere on the box (another writer's failed disk sync on the same file
// system) before it was durable. Workers write the message again without
// counting an attempt against max_attempts or marking the destination down.
var ErrNotAttempted = errors.New("delivery undone by a failure elsewhere on the box")
