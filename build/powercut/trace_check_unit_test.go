package powercut

import (
	"encoding/json"
	"slices"
	"testing"
)

// The rig's trace check fails an ACKed control ID with no trace, one
// whose trace lacks the delivery a receiver saw, and one that was refused;
// a second "delivered" is counted, not failed; a message the receiver does
// not hold needs no "delivered".
func TestTraceCheckFindsWhatIsMissing(t *testing.T) {
	var traces []traceMsg
	if err := json.Unmarshal([]byte(`[
		{"guid":"g1","control_id":"A1","route":"destinations","events":[{"what":"received"},{"what":"delivered","dest":"ehr"},{"what":"delivered","dest":"archive"}]},
		{"guid":"g2","control_id":"A2","route":"destinations","events":[{"what":"received"},{"what":"attempt","dest":"ehr"}]},
		{"guid":"g4","control_id":"A4","route":"refused","events":[{"what":"received"},{"what":"refused"}]},
		{"guid":"g5","control_id":"A5","route":"destinations","events":[{"what":"received"},{"what":"delivered","dest":"ehr"},{"what":"delivered","dest":"ehr"}]},
		{"guid":"g6","control_id":"A6","route":"destinations","events":[{"what":"received"},{"what":"dead","dest":"rejects"}]},
		{"guid":"g7","control_id":"A7","route":"destinations","events":[{"what":"received"}]}
	]`), &traces); err != nil {
		t.Fatal(err)
	}
	w := traceWant{
		acked: []string{"A1", "A2", "A3", "A4", "A5", "A6", "A7"},
		held: map[string]map[string]bool{
			"ehr":     {"A1": true, "A2": true, "A5": true},
			"archive": {"A1": true},
			"rejects": {"A6": true},
		},
		done: map[string]string{"ehr": "delivered", "archive": "delivered", "rejects": "dead"},
	}
	f := checkTraces(w, traces)
	lines := f.lines()
	for _, l := range lines {
		t.Logf("the rig would fail with: %s", l)
	}
	want := []string{
		"1 control IDs with no delivered ehr in their trace, first: [A2]",
		"2 control IDs with no trace of being received, first: [A3 A4]",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("findings = %q, want %q", lines, want)
	}
	if f.twice != 1 {
		t.Errorf("twice = %d, want 1 (A5 at ehr)", f.twice)
	}
}
