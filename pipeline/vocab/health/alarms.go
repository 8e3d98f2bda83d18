package health

// Alarm kinds of the data path: the "kind" of an event published on
// hl7edge/<device-id>/alarm and logged as "alarm". The appliance's own
// (configuration and firmware changes, the card's wear) live with the
// device: device/appliance, device/firmware and device/cardwatch, alarms.go. Fleet dashboards match on these strings, so a value
// never changes once shipped; docs/mqtt-api.md explains each one to
// operators, and a test in build/ keeps that page and this list in step.
//
// An alarm's detail names the component, the limit and what to do; like the
// kind it never holds patient data (control IDs and GUIDs only).
const (
	// AlarmSpoolFull: the spool reached spool.max_bytes; intake answers AE
	// to every sender until it drains. Raised once per episode.
	AlarmSpoolFull = "spool_full"
	// AlarmSpoolOK: the spool is below 90% of max_bytes again after a
	// spool_full; intake accepts messages.
	AlarmSpoolOK = "spool_ok"
	// AlarmStorageError: the spool failed to write or read (disk error,
	// corruption); intake answers AE and deliveries may stop.
	AlarmStorageError = "storage_error"
	// AlarmDeadLetter: a message reached a destination's max_attempts and
	// was moved to its dead letters; the detail names the GUID.
	AlarmDeadLetter = "dead_letter"
	// AlarmURLRefused: a web service's ping reply handed out a URL that is
	// not https (without allow_insecure_http) or not in allowed_hosts;
	// nothing was sent to it.
	AlarmURLRefused = "url_refused"
)
