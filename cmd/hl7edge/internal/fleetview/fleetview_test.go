package fleetview

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
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

// TestOnlineOnlyAfterTheWill is issue 24's item 5: once a box's Last Will
// (offline, session N) is seen, an online status of a lower session, or of
// session N no newer than the birth already seen, is a replay (forged or
// stale) and leaves the box offline; a reconnect (session N, a later birth
// time) or a new run (N+1) brings it back. A session no counter of starts
// can reach is ignored, so it cannot make the real will look stale, and a
// will lagging the birth by more than a few restarts is not stale either.
func TestOnlineOnlyAfterTheWill(t *testing.T) {
	v := NewView("hl7edge")
	online := func(id string, s uint64, at string) {
		v.Put("hl7edge/"+id+"/status", fmt.Appendf(nil, `{"state":"online","session":%d,"version":"1.0","time":"2026-11-30T%sZ"}`, s, at))
	}
	offline := func(id string, s uint64) {
		v.Put("hl7edge/"+id+"/status", fmt.Appendf(nil, `{"state":"offline","session":%d}`, s))
	}
	row := func(id string) Row {
		for _, r := range v.Rows() {
			if r.ID == id {
				return r
			}
		}
		t.Fatalf("no row for %s", id)
		return Row{}
	}
	online("gw1", 7, "12:00:00")
	offline("gw1", 7) // the will
	for _, s := range []uint64{7, 6, 1} {
		if online("gw1", s, "12:00:00"); row("gw1").Online {
			t.Fatalf("the birth of session %d replayed after the will of session 7 shows the box online", s)
		}
	}
	if online("gw1", 7, "12:05:00"); !row("gw1").Online {
		t.Fatal("a reconnect of session 7 (a later birth) after its will left the box offline")
	}
	offline("gw1", 7)
	if online("gw1", 8, "11:00:00"); !row("gw1").Online {
		t.Fatal("the birth of session 8 after the will of 7 left the box offline")
	}

	online("gw2", 5, "12:00:00")
	online("gw2", 18446744073709551615, "12:00:01")
	if r := row("gw2"); r.Session != 5 {
		t.Errorf("absurd session taken: row %+v", r)
	}
	if offline("gw2", 5); row("gw2").Online {
		t.Error("the real will of session 5 was ignored after an absurd session")
	}

	online("gw3", 5, "12:00:00")
	online("gw3", 1<<31, "12:00:01") // below the bound, far above anything real
	if offline("gw3", 5); row("gw3").Online {
		t.Error("a will 2^31 sessions behind the birth was taken for a late one")
	}
}

// TestNoControlCharactersPrinted: whatever a status or health holds (ESC
// sequences that clear the screen, set the title or hide text, BEL, C1
// controls, bidi overrides), neither the table nor the JSON rows carry it;
// a device id that is not one is not a row.
func TestNoControlCharactersPrinted(t *testing.T) {
	v := NewView("hl7edge")
	evil := "1.4.2\x1b[2J\x1b[31mPWNED\x1b]0;owned\a\u009b2J\u202e"
	st, _ := json.Marshal(map[string]any{"state": "online", "session": 1, "version": evil, "time": "2026-11-30T12:00:00Z"})
	v.Put("hl7edge/gw1/status", st)
	h, _ := json.Marshal(health.Snapshot{Device: "gw1", Version: evil, Time: time.Now(), ClockSynced: true,
		Sources: []health.ComponentSnapshot{{Name: "in\x1b[8m", Type: "mllp", State: health.Down, LastError: "down\x07\u0085"}},
		Alarms:  []health.Alarm{{Kind: "dead\x1b[8m", Detail: "x\x1b]0;t\a"}}})
	v.Put("hl7edge/gw1/health", h)
	v.Put("hl7edge/gw\x1b[2J/status", []byte(`{"state":"online","session":1}`))
	v.Put("hl7edge/ops@hq/status", []byte(`{"state":"online","session":1}`))
	rows := v.Rows()
	if len(rows) != 1 {
		t.Fatalf("rows %+v; want gw1 alone", rows)
	}
	var out bytes.Buffer
	Render(&out, rows, time.Now())
	j, _ := json.Marshal(rows)
	for name, b := range map[string][]byte{"table": out.Bytes(), "JSON rows": j} {
		for _, r := range string(b) {
			if (unicode.IsControl(r) && r != '\n') || unicode.Is(unicode.Cf, r) {
				t.Errorf("%s holds control character %U:\n%q", name, r, b)
				break
			}
		}
	}
	if !strings.Contains(out.String(), "1.4.2") || !strings.Contains(out.String(), "PWNED") {
		t.Errorf("the printable part of the version is gone:\n%s", out.String())
	}
}

// TestProblemsColumn is issue 28's point 7: the table says what is wrong
// in words, not only the fault code.
func TestProblemsColumn(t *testing.T) {
	v := NewView("hl7edge")
	v.Put("hl7edge/gw1/status", []byte(`{"state":"online","session":1,"version":"1.0","time":"2026-11-30T12:00:00Z"}`))
	h, _ := json.Marshal(health.Snapshot{Device: "gw1", Version: "1.0", Time: time.Now(), ClockSynced: true,
		Destinations: []health.ComponentSnapshot{{Name: "ehr", Type: "webservice", State: health.Down, LastError: "connect: connection refused"},
			{Name: "lab", Type: "mllp", State: health.Down, LastError: "connect: connection refused"}}})
	v.Put("hl7edge/gw1/health", h)
	var out bytes.Buffer
	Render(&out, v.Rows(), time.Now())
	if !strings.Contains(out.String(), "PROBLEMS") || !strings.Contains(out.String(), "destination ehr is down") || !strings.Contains(out.String(), "(+1 more)") {
		t.Errorf("table lacks the problems column:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}
