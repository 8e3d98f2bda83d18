package appliance_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/mqttagent/mqtttest"
	"github.com/hl7edge/hl7edge/device/trust"
)

// TestRemoteApplyProbeDocuments: each configuration issue 24's probe got
// applied with a valid signature is refused with its reason: a new plain
// MLLP destination to a host the box already reaches, a TLS destination
// renamed with TLS off, another tls.server_name, the spool or the admin
// socket moved (onto the replay record), /etc/shadow as a password file,
// a file destination writing to /etc. The file stays byte for byte, the
// box is not restarted, and it goes on delivering with the old
// configuration.
func TestRemoteApplyProbeDocuments(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-probe")
	pass := filepath.Join(r.dir, "ehr.pass")
	if err := os.WriteFile(pass, []byte("s3cret-ehr\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wsPort, lisPort := mqtttest.FreePort(t), mqtttest.FreePort(t) // nothing listens: configured only
	ehr := fmt.Sprintf("  - {name: ehr, type: webservice, url: \"https://127.0.0.1:%d/hl7/ping\", logon_id: gw, password_file: %s, allowed_hosts: [\"127.0.0.1\"]}\n", wsPort, pass)
	lis := fmt.Sprintf("  - {name: lis, type: mllp, address: \"127.0.0.1:%d\", tls: {enabled: true}}\n", lisPort)
	old := r.yaml(r.mllpPort, ehr+lis)
	r.writeConfig(old)
	op := r.operator(t)
	rn := r.start(appliance.Options{})
	op.waitOnline(t, 0)

	brokerHostPort := strings.TrimPrefix(r.broker.URL, "tcp://")
	cases := []struct{ name, yaml, want string }{
		{"new plain MLLP destination to a known host", r.yaml(r.mllpPort, ehr+lis+
			fmt.Sprintf("  - {name: leak, type: mllp, address: %q}\n", brokerHostPort)), `destination "leak": address`},
		{"renamed with TLS off", r.yaml(r.mllpPort, ehr+fmt.Sprintf("  - {name: lis-new, type: mllp, address: \"127.0.0.1:%d\"}\n", lisPort)), "TLS off"},
		{"server_name changed", r.yaml(r.mllpPort, ehr+strings.Replace(lis, "enabled: true", "enabled: true, server_name: evil.example.net", 1)), "tls.server_name"},
		{"spool.dir moved", strings.Replace(old, "dir: "+r.spool, "dir: "+r.spool+"-new", 1), "spool.dir"},
		{"admin.socket onto the replay record", strings.Replace(old, "socket: "+r.socket, "socket: "+filepath.Join(r.dir, "signed-commands.json"), 1), "admin.socket"},
		{"password_file /etc/shadow", strings.Replace(old, "password_file: "+pass, "password_file: /etc/shadow", 1), "/etc/shadow"},
		{"file destination to /etc", strings.Replace(old, "dir: "+r.archive, "dir: /etc", 1), "outside the directories"},
	}
	for _, c := range cases {
		if c.yaml == old {
			t.Fatalf("%s: the test's edit changed nothing", c.name)
		}
		a := op.send(t, command.ConfigApply, map[string]any{"yaml": c.yaml, "grace": "1s"})
		if a.Status != command.Failed || !strings.Contains(a.Detail, c.want) || !strings.Contains(a.Detail, "the current one stays") {
			t.Errorf("%s over MQTT: %s; want failed, naming %q", c.name, a, c.want)
		}
	}
	if got := r.configFile(); got != old {
		t.Fatalf("a refused remote config-apply changed the file:\n%s", got)
	}
	if n := rn.starts(); n != 1 {
		t.Fatalf("refused remote applies restarted the box (%d starts)", n)
	}
	h := op.health(t)
	var names []string
	for _, d := range h.Destinations {
		names = append(names, d.Name)
	}
	if strings.Join(names, ",") != "archive,ehr,lis" {
		t.Errorf("destinations after the refusals: %v, want the old archive, ehr, lis", names)
	}
	mustSendHL7(t, r.mllpPort, hl7Message("PROBE-1"))
	waitUntil(t, waitLimit, "the message delivered by the old configuration's archive", func() bool { return files(t, r.archive) >= 1 })
}

// TestReplayRecordStaysWhenTheSpoolMoves: the replay record lives at a fixed
// path in the state directory, not beside whatever spool.dir names, so a
// spool moved even by a local operator does not start an empty record in
// which a captured signed command runs again.
func TestReplayRecordStaysWhenTheSpoolMoves(t *testing.T) {
	t.Parallel()
	r := newRig(t, "gw-record")
	old := r.yaml(r.mllpPort, "")
	r.writeConfig(old)
	op := r.operator(t)
	rn := r.start(appliance.Options{})
	op.waitOnline(t, 0)

	inner, err := json.Marshal(map[string]any{"id": "purge-captured", "name": command.DeadPurge, "args": map[string]string{"destination": "archive"},
		"expires": time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "device": r.device})
	if err != nil {
		t.Fatal(err)
	}
	captured, err := json.Marshal(trust.Envelope{Signed: base64.StdEncoding.EncodeToString(inner), Minisig: string(r.signer.Sign(inner, "captured"))})
	if err != nil {
		t.Fatal(err)
	}
	if a := op.sendRaw(t, "purge-captured", command.DeadPurge, captured); a.Status != command.Successful {
		t.Fatalf("the first run of the signed command: %s", a)
	}
	if err := os.MkdirAll(filepath.Join(r.dir, "elsewhere"), 0o700); err != nil {
		t.Fatal(err)
	}
	moved := strings.Replace(old, "dir: "+r.spool, "dir: "+filepath.Join(r.dir, "elsewhere", "spool"), 1)
	from := op.Log.Mark()
	if resp := r.adminCall(t, command.ConfigApply, map[string]any{"yaml": moved, "grace": "1s"}); resp.Status != command.Successful {
		t.Fatalf("moving the spool through the admin socket: %+v", resp)
	}
	rn.waitStarts(t, 2)
	op.waitOnline(t, from)
	if r.configFile() != moved {
		t.Fatal("the spool move was rolled back; the test needs it applied")
	}
	a := op.sendRaw(t, "purge-captured", command.DeadPurge, captured)
	if a.Status != command.Rejected || !strings.Contains(a.Detail, "obeyed before") {
		t.Errorf("the captured command after the spool moved: %s; want rejected as obeyed before", a)
	}
}
