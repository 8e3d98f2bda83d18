package frontpanel

import (
	"strings"
	"sync"
	"testing"

	"github.com/hl7edge/hl7edge/board/led"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestDescribeOncePerMeaning: over 30 s of a blinking fault code and a flow
// of messages, Describe hears each LED's meaning once per change of
// meaning (code 4, then code 1, ACT moving then idle), never per blink.
func TestDescribeOncePerMeaning(t *testing.T) {
	var mu sync.Mutex
	var got []string
	h := newHarness(t, Options{Describe: func(which led.LED, text string) {
		mu.Lock()
		got = append(got, which.String()+" "+text)
		mu.Unlock()
	}})
	h.eng.SetReady(true)
	h.eng.SetMQTTUp(true)
	full := false
	h.onTick = func(k int) {
		if k <= 50 && k%5 == 0 {
			h.eng.Activity() // messages for 5 s
		}
		if k == 200 {
			full = true
		}
	}
	h.health = func() health.Snapshot {
		s := health.Snapshot{ClockSynced: false}
		if full {
			s.Spool = health.SpoolSnapshot{Bytes: 95, MaxBytes: 100}
		}
		return s
	}
	h.run(t, 300)
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"sys blinking 1Hz — SYS: running, every internal loop beats",
		"link on — LINK: nothing to watch (no upstream destination, no MQTT broker configured)",
		"act off — ACT: idle, no message in or out",
		"fault 4 flashes, pause — FAULT: code 4, clock not synchronised: check NTP",
		"act flashing — ACT: messages moving",
		"act off — ACT: idle, no message in or out",
		"fault 1 flash, pause — FAULT: code 1, spool nearly full",
	}
	if len(got) != len(want) {
		t.Fatalf("Describe heard %d lines, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("line %d: %q, want it to start %q", i, got[i], w)
		}
	}
}
