package appliance_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
)

// TestBirthAndRestart: the box publishes a retained online birth carrying
// its session number; a signed `restart` command over MQTT (unsigned ones
// are throttled: TestUnsignedRestartFloodKeepsIntake) rebuilds the box
// in-process, which first publishes offline for the old session and then a
// new retained birth with session+1; a clean stop publishes offline for the
// new session.
func TestBirthAndRestart(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-birth")
	r.writeConfig(r.yaml(r.mllpPort, ""))
	op := r.operator(t)
	rn := r.start(appliance.Options{})

	_, s1 := op.waitOnline(t, 0)
	_, rec := r.broker.Log.WaitFor(t, 0, "the birth as the broker saw it",
		mqtttest.JSONHas(op.base+"status", map[string]any{"state": "online", "session": s1}))
	if !rec.Retained {
		t.Errorf("birth %s was published without the retain flag", rec.Payload)
	}
	mustSendHL7(t, r.mllpPort, hl7Message("BIRTH-1"))

	from := op.Log.Mark()
	a := op.must(t, command.Restart, nil, signed())
	if !strings.Contains(a.Detail, "restart") {
		t.Errorf("%s: want a detail saying it restarts", a)
	}
	off, _ := op.Log.WaitFor(t, from, "offline for the old session",
		mqtttest.JSONHas(op.base+"status", map[string]any{"state": "offline", "session": s1}))
	on, s2 := op.waitOnline(t, from)
	if s2 != s1+1 {
		t.Errorf("session after restart is %d, want %d", s2, s1+1)
	}
	if off > on {
		t.Errorf("offline for session %d came after the new birth", s1)
	}
	b2 := rn.waitStarts(t, 2)
	if b2 == rn.box(1) || b2.Agent.Session() != s2 {
		t.Errorf("second Box: new=%v session %d; want a new Box with session %d", b2 != rn.box(1), b2.Agent.Session(), s2)
	}
	// The rebuilt box works: its MLLP source takes a message again.
	mustSendHL7(t, r.mllpPort, hl7Message("BIRTH-2"))
	waitUntil(t, waitLimit, "both messages archived", func() bool { return files(t, r.archive) == 2 })

	// A late joiner sees the new session's birth, retained.
	late := r.operator(t)
	_, m := late.Log.WaitFor(t, 0, "the retained status", func(m mqtttest.Message) bool { return m.Topic == late.base+"status" })
	if !m.Retained || !mqtttest.JSONHas(late.base+"status", map[string]any{"state": "online", "session": s2})(m) {
		t.Errorf("late subscriber got %s (retained %v), want retained online session %d", m.Payload, m.Retained, s2)
	}

	from = op.Log.Mark()
	rn.stop(t)
	op.Log.WaitFor(t, from, "offline at clean stop",
		mqtttest.JSONHas(op.base+"status", map[string]any{"state": "offline", "session": s2}))
	if n := rn.starts(); n != 2 {
		t.Errorf("%d starts, want 2", n)
	}
}

// TestPrivacyCheckCanFail proves the broker-side privacy check used by every
// test sees payloads from any client and recognises each marker.
func TestPrivacyCheckCanFail(t *testing.T) {
	t.Parallel()
	b := startBroker(t)
	b.allowPHI = true
	op := newOperator(t, b.URL, "gw-privacy")
	msg := string(hl7Message("CTRL-LEAK"))
	for i, payload := range []string{msg, `{"detail":"` + phiMRN + `"}`, "PHISTREET"} {
		op.Publish(t, fmt.Sprintf("%sleak/%d", op.base, i), false, payload)
	}
	waitUntil(t, waitLimit, "three leaks recorded", func() bool { return len(b.leaks()) == 3 })
	if l := b.leaks(); !strings.Contains(l[0], "PHIMARKER") || !strings.Contains(l[1], phiMRN) {
		t.Errorf("leaks %v", l)
	}
}
