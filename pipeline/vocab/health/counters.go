package health

// Counter names: the keys of a component's "counters" in a health snapshot
// (MQTT hl7edge/<device-id>/health, the health command, `hl7edge spool
// stats`). Fleet dashboards and the LED fault codes read them, so a value
// never changes once shipped; docs/mqtt-api.md explains each one, and a test
// in build/ keeps that page and this list in step. Several components share
// a name where the meaning is the same kind of event.
const (
	// Intake, on every source.

	CounterReceived      = "received"      // messages offered to intake
	CounterAccepted      = "accepted"      // stored in the spool for at least one destination (AA)
	CounterRejected      = "rejected"      // malformed, answered AR (web-service source: left unacknowledged on the server)
	CounterRubbish       = "rubbish"       // eaten by a rubbish bin (answered AA, not stored)
	CounterUndeliverable = "undeliverable" // matched no destination; kept in the undeliverable store (AA)
	CounterErrors        = "errors"        // the spool could not store it; answered AE
	CounterRefusedFull   = "refused_full"  // of errors: the spool was at max_bytes

	// Rubbish bin destinations.

	CounterEaten = "eaten" // messages this bin took

	// Delivery, on every destination but rubbish bins.

	CounterDelivered = "delivered" // the destination took responsibility for the message
	CounterFailures  = "failures"  // failed delivery attempts (the message stays first in line)
	CounterDead      = "dead"      // messages moved to dead letters after max_attempts

	// Web service, destination and source.

	CounterPings           = "pings"            // pings sent
	CounterPosts           = "posts"            // destination: posts sent
	CounterAcked           = "acked"            // destination: posts answered with the matching ACK
	CounterExceptions      = "exceptions"       // EXCEPTION replies
	CounterTransportErrors = "transport_errors" // transport failures (HTTP status, timeout, not XML, wrong ACK)
	CounterTLSErrors       = "tls_errors"       // of transport_errors: TLS handshake or certificate failures
	CounterRefusedURLs     = "refused_urls"     // URLs from a ping reply refused by https/allowed_hosts rules
	CounterPolls           = "polls"            // source: mailbox requests answered
	CounterMessages        = "messages"         // web-service source: stored (each once); serial: accepted or delivered
	CounterDuplicates      = "duplicates"       // web-service source: offered again after a lost ack, not stored again; LIS01: repeated frames

	// Serial ports (MLLP or LIS01-A2 framing), source and destination.

	CounterRefused    = "refused"     // serial source: answered AE/AR or NAKed; serial or MLLP destination: the peer said no (AE/AR/NAK)
	CounterOversize   = "oversize"    // longer than max_message_bytes, refused
	CounterReopens    = "reopens"     // the port was opened again after failing
	CounterNoiseBytes = "noise_bytes" // bytes outside any frame, skipped
	CounterStaleACKs  = "stale_acks"  // destination, MLLP framing: ACKs for another message, skipped

	// LIS01-A2 link layer (serial ports with framing lis01-a2).

	CounterFrames      = "frames"      // frames received in order (MLLP listener: frames read)
	CounterNAKSent     = "nak_sent"    // NAKs sent for bad or refused frames
	CounterTimeouts    = "timeouts"    // the peer went quiet mid-transmission
	CounterBusy        = "busy"        // receiver: ENQ answered NAK while busy; sender: the peer was busy
	CounterAborted     = "aborted"     // transmissions the peer abandoned (EOT mid-message, or too many tries)
	CounterContention  = "contention"  // sender: both ends sent ENQ at once
	CounterRetransmits = "retransmits" // sender: frames sent again after a NAK or timeout

	// MLLP listeners.

	CounterConnectionsTotal   = "connections_total"    // connections admitted
	CounterConnectionsClosed  = "connections_closed"   // admitted connections that ended; open = total - closed
	CounterRefusedConnections = "refused_connections"  // connections refused at max_connections
	CounterGarbageBytes       = "garbage_bytes"        // bytes outside MLLP frames, skipped
	CounterIdleClosed         = "idle_closed"          // connections closed after idle_timeout
	CounterWriteTimeouts      = "write_timeouts"       // ACKs the sender did not read in time
	CounterTLSFailures        = "tls_failures"         // TLS handshakes that failed
	CounterRefusedPerPeer     = "refused_per_peer"     // connections refused at max_connections_per_peer for their address
	CounterEvicted            = "evicted_connections"  // connections closed to make room: the listener was full and they had sent nothing
	CounterFirstFrameTimeouts = "first_frame_timeouts" // connections closed with no complete frame within first_frame_timeout

	// MQTT agent (service "mqtt").

	CounterCommandsAccepted = "commands_accepted" // cmd/req commands queued to run
	CounterCommandsRejected = "commands_rejected" // cmd/req commands rejected unrun: malformed, expired, unknown, busy or throttled
	// CounterCommandsThrottled counts, of commands_rejected, the unsigned
	// disruptive commands refused for coming too soon (a restart flood);
	// it counts for the life of the process, across pipeline restarts.
	CounterCommandsThrottled = "commands_throttled"
	CounterResponsesDropped  = "responses_dropped" // cmd/res answers dropped because more waited than the outbox holds
	CounterAlarmsDropped     = "alarms_dropped"    // alarms dropped because more waited than the outbox holds
)
