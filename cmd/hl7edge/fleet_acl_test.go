package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetsim"
	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetview"
	"github.com/hl7edge/hl7edge/device/mqttagent"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
)

// aclBroker starts Mosquitto with passwords for users and the ACL file
// acl; it skips when mosquitto_passwd is not installed.
func aclBroker(t *testing.T, acl string, users ...string) (url string, pwFile func(user string) string) {
	t.Helper()
	mp, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		t.Skip("mosquitto_passwd is not installed (Debian: mosquitto): the shipped ACL needs password authentication to be tested")
	}
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	for i, u := range users {
		args := []string{"-b", passwd, u, "pw-" + u}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(mp, args...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd %s: %v\n%s", u, err, out)
		}
		if err := os.WriteFile(filepath.Join(dir, u+".pw"), []byte("pw-"+u+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf("allow_anonymous false\npassword_file %s\nacl_file %s\n", passwd, acl)
	if os.Geteuid() == 0 {
		// As root Mosquitto drops to the mosquitto user, who cannot read
		// the test's private directory.
		conf += "user root\n"
	}
	url = mqtttest.StartMosquittoConf(t, conf)
	return url, func(u string) string { return filepath.Join(dir, u+".pw") }
}

// TestShippedACLKeepsGatewaysApart is issue 24's item 5 on a real
// Mosquitto with the ACL the package ships (build/mosquitto.acl): gateway
// A's credential cannot publish B's status or health, so the fleet view's
// row for B, once B is cut off (Last Will), stays offline whatever A
// publishes; a read-only operator can read the fleet but publish nothing.
func TestShippedACLKeepsGatewaysApart(t *testing.T) {
	acl, err := filepath.Abs("../../build/mosquitto.acl")
	if err == nil {
		_, err = os.Stat(acl)
	}
	if err != nil {
		t.Fatalf("the shipped ACL: %v", err)
	}
	url, pw := aclBroker(t, acl, "gw-a", "gw-b", "viewer@ops")
	fleet, err := fleetsim.Start(t.Context(), url, t.TempDir(), []fleetsim.Spec{
		{ID: "gw-a", Version: "1.0", Username: "gw-a", PasswordFile: pw("gw-a")},
		{ID: "gw-b", Version: "1.0", Queued: 3, Offline: fleetsim.Cut, Username: "gw-b", PasswordFile: pw("gw-b")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Stop()
	viewer := mqttagent.Config{Broker: url, Username: "viewer@ops", PasswordFile: pw("viewer@ops")}
	mon := mqtttest.Subscribe(t, url, "hl7edge/#", mqtttest.ClientOptions{Username: "viewer@ops", Password: "pw-viewer@ops"})
	r, err := fleetview.Open(t.Context(), fleetview.Options{MQTT: viewer})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	row := func(id string) (fleetview.Row, bool) {
		for _, x := range r.View.Rows() {
			if x.ID == id {
				return x, true
			}
		}
		return fleetview.Row{}, false
	}
	waitFleet(t, r, "both gateways online with health", func() bool {
		a, okA := row("gw-a")
		b, okB := row("gw-b")
		return okA && okB && a.Online && b.Online && !a.HealthTime.IsZero() && !b.HealthTime.IsZero()
	})
	b, _ := row("gw-b")
	attacker := mqtttest.Subscribe(t, url, "hl7edge/gw-a/cmd/req", mqtttest.ClientOptions{Username: "gw-a", Password: "pw-gw-a"})

	// A's forgeries reach no one; its own alarm (the sentinel, published
	// after them on the same connection) does.
	forge := func(what string) {
		t.Helper()
		from := mon.Log.Mark()
		later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		for _, s := range []uint64{b.Session, b.Session + 1, fleetview.MaxSession} {
			attacker.Publish(t, "hl7edge/gw-b/status", true, fmt.Sprintf(`{"state":"online","session":%d,"version":"1.0","time":%q}`, s, later))
		}
		attacker.Publish(t, "hl7edge/gw-b/health", true, fmt.Sprintf(`{"device":"gw-b","version":"1.0","time":%q,"clock_synced":true}`, later))
		sentinel := "sentinel " + what
		attacker.Publish(t, "hl7edge/gw-a/alarm", false, fmt.Sprintf(`{"kind":%q}`, sentinel))
		mon.Log.WaitFor(t, from, "A's own alarm after its forgeries "+what, func(m mqtttest.Message) bool {
			return m.Topic == "hl7edge/gw-a/alarm" && strings.Contains(string(m.Payload), sentinel)
		})
		for _, m := range mon.Log.All()[from:] {
			if strings.HasPrefix(m.Topic, "hl7edge/gw-b/") {
				t.Errorf("%s: gateway A's credential published %s: %s", what, m.Topic, m.Payload)
			}
		}
	}
	for _, leaf := range []string{"status", "health"} {
		mon.Log.WaitFor(t, 0, "the monitor to see B's "+leaf, func(m mqtttest.Message) bool { return m.Topic == "hl7edge/gw-b/"+leaf })
	}
	forge("while B is online")
	fleet.Leave() // B's connection is cut: the broker publishes its Last Will
	waitFleet(t, r, "gw-b offline by its Last Will", func() bool { x, _ := row("gw-b"); return !x.Online })
	mon.Log.WaitFor(t, 0, "the monitor to see B's Last Will too", mqtttest.JSONHas("hl7edge/gw-b/status", map[string]any{"state": "offline"}))
	forge("after B's Last Will")
	if x, _ := row("gw-b"); x.Online || x.Queued != 3 {
		t.Errorf("after A's forgeries the watching fleet view shows gw-b %+v; want offline with its last real health (3 queued)", x)
	}

	// The read-only operator publishes nothing: no new row, no command.
	op := mqtttest.Subscribe(t, url, "hl7edge/gw-a/status", mqtttest.ClientOptions{Username: "viewer@ops", Password: "pw-viewer@ops"})
	op.Publish(t, "hl7edge/gw-c/status", true, `{"state":"online","session":1,"version":"1.0"}`)
	op.Publish(t, "hl7edge/gw-a/cmd/req", false, `{"id":"x","name":"restart"}`)
	op.Publish(t, "hl7edge/viewer@ops/status", true, `{"state":"online","session":1,"version":"1.0"}`)

	// A fresh `hl7edge fleet` as the operator reads the retained state.
	out, err := exec.Command(binPath, "fleet", "--broker", url, "--username", "viewer@ops", "--password-file", pw("viewer@ops"), "--json").Output()
	if err != nil {
		t.Fatalf("hl7edge fleet: %v", err)
	}
	var rows []fleetview.Row
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("fleet --json: %v\n%s", err, out)
	}
	if len(rows) != 2 {
		t.Errorf("fleet as the operator lists %d rows, want gw-a and gw-b:\n%s", len(rows), out)
	}
	for _, x := range rows {
		if x.ID == "gw-b" && (x.Online || x.Queued != 3) {
			t.Errorf("fresh fleet view shows gw-b %+v; want offline with 3 queued", x)
		}
	}
	for _, m := range attacker.Log.All() {
		t.Errorf("the read-only operator's command reached gw-a: %s", m.Payload)
	}
}

// waitFleet waits up to a minute for cond, re-checking on every change.
func waitFleet(t *testing.T, r *fleetview.Reader, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(time.Minute)
	for !cond() {
		select {
		case <-r.View.Changed():
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s: not within a minute; rows %+v", what, r.View.Rows())
		}
	}
}
