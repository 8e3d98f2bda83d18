package command

// Command names: the "name" of a request on hl7edge/<device-id>/cmd/req and
// on the admin socket (the CLI). Operators' scripts and dashboards send
// these, so a value never changes once shipped; docs/mqtt-api.md documents
// each one with its arguments and answer, and a test in build/ keeps that
// page and this list in step.
const (
	Health       = "health"      // the health snapshot now
	SpoolStats   = "spool-stats" // spool figures per destination and the pull sources' counters
	StatusReport = "status"      // the health snapshot judged: healthy or not, problems, what each LED means
	Reping       = "reping"      // a web-service destination pings before its next post
	Pause        = "pause"       // hold a source or destination (its queue keeps growing)
	Resume       = "resume"      // undo pause
	DeadList     = "dead-list"   // a destination's dead letters: identifiers and reasons, never content
	DeadRetry    = "dead-retry"  // queue dead letters again, at the back of the destination's queue
	DeadPurge    = "dead-purge"  // delete dead letters
	SpoolSkip    = "spool-skip"  // move the message a destination keeps failing on to its dead letters, with a reason
	// The undeliverable store: messages that matched no destination.
	UndeliverableList  = "undeliverable-list"  // identifiers and message types, never content
	UndeliverableRetry = "undeliverable-retry" // route them again by the current match rules
	UndeliverablePurge = "undeliverable-purge" // delete them
	Identify           = "identify"            // blink all four LEDs
	ConfigGet          = "config-get"          // the configuration file as it is on disk
	ConfigApply        = "config-apply"        // validate, write and restart with a new configuration; roll back if unhealthy
	// ConfigApplyResult says what became of a config-apply: on trial, kept or rolled back.
	ConfigApplyResult = "config-apply-result"
	TailLog           = "tail-log" // the last lines of the daemon's log
	Restart           = "restart"  // restart the pipeline in-process (the configuration is read again)
	// FirmwareUpdate downloads a signed image, switches to it on trial and
	// rolls back unless it stays healthy (device/firmware).
	FirmwareUpdate = "firmware-update"
	// Trace says where messages went: identifiers, MSH-9 and MSH-10,
	// names, times and outcome codes, never content.
	Trace = "trace"
	// Replay queues retained delivered messages again under new GUIDs.
	Replay = "replay"
)
