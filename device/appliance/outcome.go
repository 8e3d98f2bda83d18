package appliance

import "slices"

// What became of a configuration applied by config-apply.
const (
	ApplyOnTrial        = "trial"           // running, not yet through its grace period
	ApplyKept           = "kept"            // healthy after its grace period (config_applied)
	ApplyRolledBack     = "rolled_back"     // unhealthy or did not start; the previous one runs (config_rolled_back)
	ApplyRollbackFailed = "rollback_failed" // the previous one could not be written back (config_rollback_failed)
	ApplyUnknown        = "unknown"         // no such command since the daemon started
)

// ApplyOutcome is config-apply-result's answer.
type ApplyOutcome struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Detail string `json:"detail"`
}

// keptOutcomes bounds the outcomes remembered: enough for anyone still
// waiting on one.
const keptOutcomes = 16

// settle records the state of the configuration applied by command id.
func (a *Appliance) settle(id, state, detail string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.outcomes = slices.DeleteFunc(a.outcomes, func(o ApplyOutcome) bool { return o.ID == id })
	a.outcomes = append(a.outcomes, ApplyOutcome{ID: id, State: state, Detail: detail})
	if len(a.outcomes) > keptOutcomes {
		a.outcomes = slices.Delete(a.outcomes, 0, len(a.outcomes)-keptOutcomes)
	}
}

// outcome is what became of the configuration applied by command id.
func (a *Appliance) outcome(id string) ApplyOutcome {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, o := range a.outcomes {
		if o.ID == id {
			return o
		}
	}
	return ApplyOutcome{ID: id, State: ApplyUnknown, Detail: "no configuration was applied by command " + id + " since the daemon started"}
}
