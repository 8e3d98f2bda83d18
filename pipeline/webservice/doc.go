// Package webservice is the gateway's side of the Postmaster web-service
// protocol (docs/protocol.md): a Destination that pings and posts spooled
// messages upstream (a flow.Output), and a Source that pings, reads a
// mailbox, gets each message, hands it to intake and acknowledges it once
// it is stored.
//
// Both talk through one http.Client per profile (NewHTTPClient): TLS 1.2 or
// newer, verified against the system roots plus an optional CA file,
// keep-alive and TLS session resumption, no redirects. Every URL a ping
// reply hands out is checked against the profile's URLPolicy before
// anything is sent to it.
//
// Errors say what kind of failure happened: *wire.Exception (the server
// answered with an EXCEPTION), ErrRefusedURL (a ping reply pointed
// somewhere the profile forbids; treated as an EXCEPTION) or ErrTransport
// (anything else: status, timeout, reset, malformed reply, an ACK for
// another GUID). In every case the caller waits a back-off (pipeline/vocab/backoff) and the next
// attempt starts again with a ping.
//
// The wire format is in the wire sub-package, the reference server in
// refserver and the upstream checker in conformance.
package webservice
