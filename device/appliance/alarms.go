package appliance

// Alarm kinds the appliance raises about configuration changes (the data
// path's are in pipeline/vocab/health, alarms.go; docs/mqtt-api.md lists them
// all, and a test in build/ keeps the page and the lists in step).
const (
	// AlarmConfigApplied: a configuration from config-apply stayed healthy
	// for its grace period and is kept.
	AlarmConfigApplied = "config_applied"
	// AlarmConfigRolledBack: a configuration from config-apply was not
	// healthy after its grace period (or did not start) and the previous
	// one is back.
	AlarmConfigRolledBack = "config_rolled_back"
	// AlarmConfigRollbackFailed: rolling back a bad configuration failed;
	// the box needs an operator.
	AlarmConfigRollbackFailed = "config_rollback_failed"
)
