package firmware

// Alarm kinds of firmware updates (docs/mqtt-api.md lists every alarm, and
// a test in build/ keeps the page and the lists in step).
const (
	// AlarmFirmwareRolledBack: a firmware version from firmware-update did
	// not start, stopped, or was unhealthy during its trial, and the previous
	// version runs again; the detail names the version and the reason.
	AlarmFirmwareRolledBack = "firmware_rolled_back"
	// AlarmFirmwareCommitted: a firmware version stayed healthy for its
	// trial and is kept.
	AlarmFirmwareCommitted = "firmware_committed"
)
