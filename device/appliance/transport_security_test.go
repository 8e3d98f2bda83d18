package appliance_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/device/trust"
)

// TestRemoteApplyCannotLowerTransportSecurity: a config-apply arriving on
// cmd/req that would send patient data or the password somewhere less safe
// (plain HTTP, a wider allowed_hosts, a host the box never talked to) is
// refused with a reason naming the key; the file stays byte for byte and
// the box is not restarted. The same change through the admin socket, a
// local operator's path, is applied.
func TestRemoteApplyCannotLowerTransportSecurity(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-downgrade")
	pass := filepath.Join(r.dir, "ehr.pass")
	if err := os.WriteFile(pass, []byte("s3cret-ehr\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := mqtttest.FreePort(t) // nothing listens: the destination only has to be configured
	ehr := func(url, extra string) string {
		return fmt.Sprintf("  - name: ehr\n    type: webservice\n    url: %s\n    logon_id: gw\n    password_file: %s\n%s", url, pass, extra)
	}
	https := fmt.Sprintf("https://127.0.0.1:%d/hl7/ping", port)
	old := r.yaml(r.mllpPort, ehr(https, "    allowed_hosts: [\"127.0.0.1\"]\n"))
	r.writeConfig(old)
	op := r.operator(t) // signs: a signature does not let a remote apply lower transport security
	_, otherPub, err := trust.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	rn := r.start(appliance.Options{})
	op.waitOnline(t, 0)

	cases := []struct {
		name, yaml, want string
	}{
		{"plain http", r.yaml(r.mllpPort, ehr(fmt.Sprintf("http://127.0.0.1:%d/hl7/ping", port),
			"    allowed_hosts: [\"127.0.0.1\"]\n    allow_insecure_http: true\n")), "TLS off"},
		{"wider allowed_hosts", r.yaml(r.mllpPort, ehr(https, "    allowed_hosts: [\"*\"]\n")), "allowed_hosts"},
		{"allowed_hosts removed", r.yaml(r.mllpPort, ehr(https, "")), "allowed_hosts"},
		{"new upstream host", r.yaml(r.mllpPort, ehr(fmt.Sprintf("https://127.0.0.2:%d/hl7/ping", port),
			"    allowed_hosts: [\"127.0.0.2\"]\n")), "127.0.0.2"},
		{"new mllp destination host", r.yaml(r.mllpPort, ehr(https, "    allowed_hosts: [\"127.0.0.1\"]\n")+
			"  - name: lis\n    type: mllp\n    address: 10.9.9.9:2575\n"), "10.9.9.9"},
		// What the gateway trusts is not the remote signer's to widen either.
		{"signing key added", strings.Replace(r.yaml(r.mllpPort, ehr(https, "    allowed_hosts: [\"127.0.0.1\"]\n")),
			"keys: ["+r.pub+"]", "keys: ["+r.pub+", "+otherPub+"]", 1), "trust.keys"},
	}
	for _, c := range cases {
		a := op.send(t, command.ConfigApply, map[string]any{"yaml": c.yaml, "grace": "1s"})
		if a.Status != command.Failed || !strings.Contains(a.Detail, c.want) || !strings.Contains(a.Detail, "admin socket") {
			t.Errorf("%s over MQTT: %s; want failed naming %q and pointing to the admin socket", c.name, a, c.want)
		}
	}
	if got := r.configFile(); got != old {
		t.Fatalf("a remote config-apply that lowers transport security changed the file:\n%s", got)
	}
	op.health(t)
	if n := rn.starts(); n != 1 {
		t.Fatalf("refused remote applies restarted the box (%d starts)", n)
	}

	// A change that keeps the transport as safe as it was still goes through MQTT.
	same := r.yaml(r.mllpPort, ehr(https, "    allowed_hosts: [\"127.0.0.1\"]\n    timeout: 5s\n"))
	from := op.Log.Mark()
	if a := op.send(t, command.ConfigApply, map[string]any{"yaml": same, "grace": "1s"}); a.Status != command.Successful {
		t.Fatalf("a remote apply that lowers nothing: %s, want successful", a)
	}
	rn.waitStarts(t, 2)
	op.waitOnline(t, from)

	// The local operator may lower it.
	local := cases[0].yaml
	if resp := r.adminCall(t, command.ConfigApply, map[string]any{"yaml": local, "grace": "1s"}); resp.Status != command.Successful {
		t.Fatalf("the same change through the admin socket: %+v, want successful", resp)
	}
	rn.waitStarts(t, 3)
	if got := r.configFile(); got != local {
		t.Errorf("after the local apply the file is not the applied configuration")
	}
}
