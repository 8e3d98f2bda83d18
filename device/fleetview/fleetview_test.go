package fleetview

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/health"
)

// TestStaleWillIgnored: the Will of session 6 arriving after the birth of
// session 7 leaves the box online; its own session's offline does not.
func TestStaleWillIgnored(t *testing.T) {
	v := NewView("hl7edge")
	h, _ := json.Marshal(health.Snapshot{Device: "gw1", Version: "1.0", Time: time.Now(), ClockSynced: true})
	v.Put("hl7edge/gw1/health", h)
	v.Put("hl7edge/gw1/status", []byte(`{"state":"online","session":7,"version":"1.0","time":"2026-11-30T12:00:00Z"}`))
	v.Put("hl7edge/gw1/status", []byte(`{"state":"offline","session":6}`))
	if r := v.Rows(); len(r) != 1 || !r[0].Online || r[0].Session != 7 {
		t.Fatalf("after a stale will: %+v", r)
	}
	v.Put("hl7edge/gw1/status", []byte(`{"state":"offline","session":7}`))
	if r := v.Rows(); r[0].Online {
		t.Fatalf("after its own session's offline: %+v", r)
	}
	// Topics of other shapes are not gateways.
	v.Put("hl7edge/gw2/alarm", []byte(`{}`))
	v.Put("hl7edge/_fleet/x/probe", []byte(`x`))
	v.Put("other/gw3/status", []byte(`{"state":"online","session":1}`))
	if r := v.Rows(); len(r) != 1 {
		t.Fatalf("rows %+v", r)
	}
	// An empty retained message forgets the box.
	v.Put("hl7edge/gw1/status", nil)
	v.Put("hl7edge/gw1/health", nil)
	if r := v.Rows(); len(r) != 0 {
		t.Fatalf("after clearing: %+v", r)
	}
}
