package appliance_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/device/trust/minisigntest"
)

// stockEnvelope signs a command with the stock minisign tool, as an
// operator without hl7edge on their machine would.
func stockEnvelope(t *testing.T, k minisigntest.Key, device, id, name string, args any, expires time.Time) []byte {
	t.Helper()
	inner, err := json.Marshal(map[string]any{"id": id, "name": name, "args": args, "device": device,
		"expires": expires.UTC().Format(time.RFC3339)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(trust.Envelope{Signed: base64.StdEncoding.EncodeToString(inner), Minisig: k.SignBytes(t, inner)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSignedConfigApply: with trust.keys set to a key the stock minisign
// tool made, an unsigned config-apply (and dead-purge) over MQTT is refused
// and changes nothing; the same configuration signed with the stock tool is
// applied and kept; the same envelope sent again is refused as a replay,
// as are envelopes for another device, expired, or signed by another key.
func TestSignedConfigApply(t *testing.T) {
	t.Parallel()
	k := minisigntest.NewKey(t)
	other := minisigntest.NewKey(t)
	r := newRig(t, "gw-signed")
	r.pub = k.Pub
	old := r.yaml(r.mllpPort, "")
	r.writeConfig(old)
	op := newOperator(t, r.broker.URL, r.device) // signs nothing itself
	rn := r.start(appliance.Options{ApplyGrace: time.Second})
	op.waitOnline(t, 0)

	next := r.yaml(r.mllpPort, "  - name: copy\n    type: file\n    dir: "+r.archive+"/copy\n") // beside archive: a remote change may add one there
	a := op.send(t, command.ConfigApply, map[string]any{"yaml": next})
	if a.Status != command.Rejected || !strings.Contains(a.Detail, "obeyed only signed") {
		t.Errorf("unsigned config-apply with trust keys: %s, want rejected saying it must be signed", a)
	}
	if a := op.send(t, command.DeadPurge, map[string]any{"name": "archive"}); a.Status != command.Rejected || !strings.Contains(a.Detail, "obeyed only signed") {
		t.Errorf("unsigned dead-purge: %s, want rejected", a)
	}
	if a := op.send(t, command.Replay, map[string]any{"to": "archive", "since": "2026-01-01T00:00:00Z"}); a.Status != command.Rejected || !strings.Contains(a.Detail, "obeyed only signed") {
		t.Errorf("unsigned replay: %s, want rejected", a)
	}
	exp := time.Now().Add(time.Minute)
	refusals := []struct {
		what, id string
		env      []byte
		want     string
	}{
		{"foreign key", "s-foreign", stockEnvelope(t, other, r.device, "s-foreign", command.ConfigApply, map[string]any{"yaml": next}, exp), "not in trust.keys"},
		{"other device", "s-other", stockEnvelope(t, k, "gw-elsewhere", "s-other", command.ConfigApply, map[string]any{"yaml": next}, exp), "for device"},
		{"expired", "s-expired", stockEnvelope(t, k, r.device, "s-expired", command.ConfigApply, map[string]any{"yaml": next}, time.Now().Add(-time.Minute)), "expired"},
	}
	for _, c := range refusals {
		if a := op.sendRaw(t, c.id, command.ConfigApply, c.env); a.Status != command.Rejected || !strings.Contains(a.Detail, c.want) {
			t.Errorf("%s: %s, want rejected containing %q", c.what, a, c.want)
		}
	}
	if got := r.configFile(); got != old {
		t.Fatalf("refused commands changed the configuration file:\n%s", got)
	}
	if n := rn.starts(); n != 1 {
		t.Fatalf("refused commands restarted the box (%d starts)", n)
	}

	env := stockEnvelope(t, k, r.device, "s-good", command.ConfigApply, map[string]any{"yaml": next}, exp)
	from := op.Log.Mark()
	if a := op.sendRaw(t, "s-good", command.ConfigApply, env); a.Status != command.Successful || !a.accepted {
		t.Fatalf("config-apply signed with the stock minisign tool: %s, want accepted then successful", a)
	}
	op.waitAlarm(t, from, "config_applied")
	if got := r.configFile(); got != next {
		t.Errorf("the signed configuration is not in the file")
	}
	rn.waitStarts(t, 2)
	if a := op.sendRaw(t, "s-good", command.ConfigApply, env); a.Status != command.Rejected || !strings.Contains(a.Detail, "already used") {
		t.Errorf("replayed envelope after the restart: %s, want rejected as already used", a)
	}
}

// TestPrivilegedWithoutTrustKeys: a gateway with no trust.keys refuses
// config-apply over MQTT, unsigned or signed, and still takes it on the
// local admin socket.
func TestPrivilegedWithoutTrustKeys(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-nokeys")
	noTrust := func(y string) string { return y[:strings.Index(y, "trust:\n")] }
	old := noTrust(r.yaml(r.mllpPort, ""))
	r.writeConfig(old)
	op := r.operator(t)
	rn := r.start(appliance.Options{ApplyGrace: time.Second})
	op.waitOnline(t, 0)

	next := noTrust(r.yaml(r.mllpPort, "  - name: copy\n    type: file\n    dir: "+r.dir+"/copy\n"))
	if a := op.send(t, command.ConfigApply, map[string]any{"yaml": next}, unsigned()); a.Status != command.Rejected || !strings.Contains(a.Detail, "no trust.keys") {
		t.Errorf("unsigned config-apply without trust keys: %s, want rejected naming trust.keys", a)
	}
	if a := op.send(t, command.ConfigApply, map[string]any{"yaml": next}); a.Status != command.Rejected || !strings.Contains(a.Detail, "no trust.keys") || a.ID == "" {
		t.Errorf("signed config-apply without trust keys: %s, want rejected naming trust.keys, with the command's id", a)
	}
	if got := r.configFile(); got != old || rn.starts() != 1 {
		t.Fatalf("refused commands changed the box (starts %d)", rn.starts())
	}
	if resp := r.adminCall(t, command.ConfigApply, map[string]any{"yaml": next, "grace": "1s"}); resp.Status != command.Successful {
		t.Errorf("config-apply on the admin socket: %+v, want successful", resp)
	}
	rn.waitStarts(t, 2)
	if got := r.configFile(); got != next {
		t.Errorf("the admin socket's configuration is not in the file")
	}
}
