package gateway_test

import (
	"path/filepath"
	"testing"
	"time"
)

const routingYAML = `
spool:
  dir: {{DIR}}/spool
  max_bytes: 256MiB
sources:
  - name: in
    type: mllp
    listen: {{MLLP}}
destinations:
  - name: ehr
    type: webservice
    url: {{EHR}}
    logon_id: {{LOGON}}
    password_file: {{PASS}}
    ca_file: {{CA}}
    allowed_hosts: ["127.0.0.1"]
    max_backoff: 1s
    match:
      all: ["MSH-9.1 in ADT,ORU"]
  - name: tests-bin
    type: rubbish
    match:
      any: ["MSH-11.1 in T"]
  - name: lab
    type: webservice
    url: {{LAB}}
    logon_id: {{LOGON}}
    password_file: {{PASS}}
    ca_file: {{CA}}
    allowed_hosts: ["127.0.0.1"]
    max_backoff: 1s
    match:
      all: ["MSH-9.1 in ORU"]
  - name: archive
    type: file
    dir: {{DIR}}/archive
    match:
      any: ["MSH-9.1 in ADT", "MSH-9.2 in R01"]
`

// TestE2ERouting runs the router inside the real gateway: the rubbish bin
// (listed after a destination that would match) eats test messages with an
// AA; a message no destination matches lands in the undeliverable store;
// and a message several destinations match reaches each of them with the
// same GUID.
func TestE2ERouting(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ehr := r.startWebService("ehr", wsOptions{})
	lab := r.startWebService("lab", wsOptions{})
	g := r.startGateway(routingYAML, map[string]string{"EHR": ehr.URL, "LAB": lab.URL})

	test := msgSpec{Control: "RT-TEST", Proc: "T"}.build()                  // ORU but processing ID T: eaten
	none := msgSpec{Control: "RT-NONE", Type: "MFN", Event: "M01"}.build()  // matches no destination
	oruMsg := msgSpec{Control: "RT-ORU"}.build()                            // ehr, lab, archive (MSH-9.2 R01)
	adtMsg := msgSpec{Control: "RT-ADT", Type: "ADT", Event: "A01"}.build() // ehr, archive
	if err := sendAll(g.Dial(t), [][]byte{test, none, oruMsg, adtMsg}); err != nil {
		t.Fatal(err)
	}
	archiveDir := filepath.Join(r.dir, "archive")
	waitFor(t, 20*time.Second, "every copy delivered", func() bool {
		st := g.GW.Spool().Stats().Destinations
		return st["ehr"].Delivered == 2 && st["lab"].Delivered == 1 && st["archive"].Delivered == 2
	})

	byCtl := func(files map[string][]byte) map[string]string {
		out := map[string]string{}
		for guid, b := range files {
			out[controlID(b)] = guid
		}
		return out
	}
	ehrGot, labGot, arcGot := byCtl(ehr.StoredFiles()), byCtl(lab.StoredFiles()), byCtl(hl7Files(t, archiveDir))
	t.Logf("ehr %v\nlab %v\narchive %v", ehrGot, labGot, arcGot)
	if len(ehrGot) != 2 || ehrGot["RT-ORU"] == "" || ehrGot["RT-ADT"] == "" {
		t.Errorf("ehr got %v, want RT-ORU and RT-ADT", ehrGot)
	}
	if len(labGot) != 1 || labGot["RT-ORU"] == "" {
		t.Errorf("lab got %v, want RT-ORU only", labGot)
	}
	if len(arcGot) != 2 || arcGot["RT-ORU"] == "" || arcGot["RT-ADT"] == "" {
		t.Errorf("archive got %v, want RT-ORU and RT-ADT", arcGot)
	}
	if g1, g2, g3 := ehrGot["RT-ORU"], labGot["RT-ORU"], arcGot["RT-ORU"]; g1 != g2 || g1 != g3 {
		t.Errorf("RT-ORU has GUIDs %s (ehr), %s (lab), %s (archive); want one GUID for every copy", g1, g2, g3)
	}
	if ehrGot["RT-ADT"] != arcGot["RT-ADT"] {
		t.Errorf("RT-ADT has GUIDs %s (ehr) and %s (archive)", ehrGot["RT-ADT"], arcGot["RT-ADT"])
	}

	st := g.GW.Spool().Stats()
	if st.Undeliverable != 1 {
		t.Errorf("undeliverable %d, want 1", st.Undeliverable)
	}
	und, err := g.GW.Spool().Undeliverable(10)
	if err != nil || len(und) != 1 || controlID(und[0].Raw) != "RT-NONE" {
		t.Errorf("undeliverable store: %d messages, %v; want RT-NONE", len(und), err)
	}
	if _, ok := st.Destinations["tests-bin"]; ok {
		t.Errorf("the rubbish bin has a queue in the spool: %+v", st.Destinations["tests-bin"])
	}
	for name, d := range st.Destinations {
		if d.Queued != 0 || d.Dead != 0 {
			t.Errorf("%s: %d queued, %d dead; want 0, 0", name, d.Queued, d.Dead)
		}
	}
	// The test message was sent first; had it been routed anywhere, it
	// would have arrived before the others.
	for where, got := range map[string]map[string]string{"ehr": ehrGot, "lab": labGot, "archive": arcGot} {
		if _, ok := got["RT-TEST"]; ok {
			t.Errorf("the test message reached %s despite the rubbish bin", where)
		}
	}
	if bin := g.Dest("tests-bin"); bin.Counters["eaten"] != 1 {
		t.Errorf("tests-bin ate %d, want 1", bin.Counters["eaten"])
	}
	src := g.Source("in")
	if src.Counters["rubbish"] != 1 || src.Counters["undeliverable"] != 1 || src.Counters["accepted"] != 2 {
		t.Errorf("source counters %v: want rubbish 1, undeliverable 1, accepted 2", src.Counters)
	}
}
