package status

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/frontpanel"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestVerdicts: what counts as a problem. A paused destination is an
// operator's choice, not a problem; one still starting, an active alarm or
// a fault code is; a daemon that has not finished starting is not healthy.
func TestVerdicts(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	base := func() health.Snapshot {
		return health.Snapshot{Device: "gw", Version: "1.0", Time: now, ClockSynced: true,
			Sources:      []health.ComponentSnapshot{{Name: "mon", Type: "mllp", State: health.Up}},
			Destinations: []health.ComponentSnapshot{{Name: "ehr", Type: "webservice", Upstream: true, State: health.Paused, Queued: 4, OldestAgeSeconds: 75}},
			Services: []health.ComponentSnapshot{{Name: "mqtt", Type: "mqtt", State: health.Up, Counters: map[string]uint64{
				health.CounterCommandsAccepted: 5, health.CounterCommandsRejected: 52, health.CounterCommandsThrottled: 50}}}}
	}
	ready := frontpanel.Inputs{Ready: true, MQTTUp: true}
	if r := Build(base(), ready); !r.Healthy || len(r.Problems) != 0 {
		t.Fatalf("paused destination: %+v", r.Problems)
	}
	if r := Build(base(), frontpanel.Inputs{MQTTUp: true}); r.Healthy || r.Problems[0] != "the daemon is still starting" {
		t.Fatalf("not ready: %+v", r.Problems)
	}
	s := base()
	s.Destinations[0].State = health.Starting
	s.Alarms = []health.Alarm{{Kind: "dead_letter", Detail: "destination ehr: message g1 moved to dead letters", Since: now, Last: now, Count: 1}}
	s.Spool = health.SpoolSnapshot{Bytes: 95, MaxBytes: 100}
	r := Build(s, ready)
	want := []string{
		"FAULT code 1, spool nearly full: senders will get AE soon: find why destinations do not deliver (queued, oldest, last error below) or raise spool.max_bytes (95% of spool.max_bytes (95 of 100 bytes))",
		"destination ehr is starting",
		"alarm dead_letter: destination ehr: message g1 moved to dead letters",
	}
	if r.Healthy || strings.Join(r.Problems, "\n") != strings.Join(want, "\n") {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(r.Problems, "\n"), strings.Join(want, "\n"))
	}
	var out bytes.Buffer
	r.Render(&out)
	for _, w := range []string{"NOT HEALTHY (3)", "FAULT  1 flash, pause  code 1, spool nearly full", "ehr   webservice  starting", "1m15s", "dead_letter since 0s ago",
		"MQTT commands: 5 accepted, 52 rejected, of which 50 throttled"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("screen lacks %q:\n%s", w, out.String())
		}
	}
}
