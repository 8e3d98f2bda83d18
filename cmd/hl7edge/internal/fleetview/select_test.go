package fleetview

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/build/golden"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestSelectByLabels: labels come from the birth (or, before one, the
// health), show in the table, and --select picks rows by them and by id;
// a malformed selector is refused with the form to use.
func TestSelectByLabels(t *testing.T) {
	v := NewView("hl7edge")
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	birth := func(id, labels string) {
		v.Put("hl7edge/"+id+"/status", []byte(`{"state":"online","session":1,"version":"1.0","time":"2026-12-07T09:00:00Z","labels":`+labels+`}`))
		h, _ := json.Marshal(health.Snapshot{Device: id, Version: "1.0", Time: at, ClockSynced: true})
		v.Put("hl7edge/"+id+"/health", h)
	}
	birth("gw1", `{"site":"north","ring":"canary"}`)
	birth("gw2", `{"site":"north"}`)
	birth("gw3", `{"site":"south","ring":"canary"}`)
	h, _ := json.Marshal(health.Snapshot{Device: "gw4", Version: "1.0", Time: at, ClockSynced: true, Labels: map[string]string{"site": "north"}})
	v.Put("hl7edge/gw4/health", h) // no status yet: its health's labels count

	ids := func(sel string) string {
		s, err := ParseSelector(sel)
		if err != nil {
			t.Fatalf("%q: %v", sel, err)
		}
		var out []string
		for _, r := range s.Filter(v.Rows()) {
			out = append(out, r.ID)
		}
		return strings.Join(out, " ")
	}
	for sel, want := range map[string]string{
		"":                          "gw4 gw1 gw2 gw3", // gw4 has no status: offline, first
		"site=north":                "gw4 gw1 gw2",
		"site=north,ring=canary":    "gw1",
		"id=gw2,id=gw3":             "gw2 gw3",
		"ring=canary,id=gw3":        "gw3",
		"ward=icu":                  "",
		" site=south , ring=canary": "gw3",
	} {
		if got := ids(sel); got != want {
			t.Errorf("--select %q picked %q, want %q", sel, got, want)
		}
	}
	for _, bad := range []string{"site", "site=", "=north", "site=north,,"} {
		if _, err := ParseSelector(bad); err == nil || !strings.Contains(err.Error(), "key=value") {
			t.Errorf("--select %q: got %v, want the key=value form named", bad, err)
		}
	}
	var out bytes.Buffer
	Render(&out, v.Rows(), at)
	golden.Check(t, "fleet-labels", out.Bytes())
}
