package appliance_test

import (
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
)

// TestIdentifyIsCapped: identify blinks for at most an hour; asking for
// 2,000,000,000 seconds (63 years of a blinking front panel) fails,
// naming the limit, and an hour is fine.
func TestIdentifyIsCapped(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-caps")
	r.writeConfig(r.yaml(r.mllpPort, ""))
	op := newOperator(t, r.broker.URL, r.device)
	r.start(appliance.Options{})
	op.waitOnline(t, 0)
	if a := op.send(t, command.Identify, map[string]any{"seconds": 2000000000}); a.Status != command.Failed || !strings.Contains(a.Detail, "3600") {
		t.Errorf("identify for 2e9 s: %s; want failed naming the 3600 s limit", a)
	}
	if a := op.send(t, command.Identify, map[string]any{"seconds": 3600}); a.Status != command.Successful {
		t.Errorf("identify for an hour: %s; want successful", a)
	}
}
