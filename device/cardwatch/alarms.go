package cardwatch

// Alarm kinds of the storage card (docs/mqtt-api.md lists every alarm, and
// a test in build/ keeps the page and the lists in step).
const (
	// AlarmStorageWearing: the eMMC holding the spool reports pre-EOL
	// "warning" (80% of its reserved blocks used) or, raised again with a
	// new detail, "urgent". Raised once per level per daemon start; the
	// health snapshot's storage_device shows the state all along.
	AlarmStorageWearing = "storage_wearing"
)
