package appliance_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/logtest"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestRefusalReasonsKeepContentToTheSender: messages carry logtest.Marker
// in every field a refusal reason can name (MSH-1, MSH-2, MSH-3 to MSH-6,
// MSH-9, MSH-12, the first segment, a segment split by a line break, PID).
// The sender's ACK may quote its own field back (MSA-3/ERR); the log, the
// tail-log answer, alarms and every other MQTT payload may not. (MSH-10 is
// left out: control IDs are what logs name by design.) The rig's cleanup
// and logtest's guard scan every log line and MQTT payload as well.
func TestRefusalReasonsKeepContentToTheSender(t *testing.T) {
	t.Parallel()
	const m = logtest.Marker
	r := newRig(t, "gw-leak")
	r.writeConfig(r.yaml(r.mllpPort, ""))
	op := newOperator(t, r.broker.URL, r.device)
	r.start(appliance.Options{})
	op.waitOnline(t, 0)
	op.waitState(t, health.Source, "in", health.Up)

	good := "MSH|^~\\&|ADT|WARD3|EHR|HOSP|20260101120000||ADT^A01|CTRL-LEAK-0|P|2.5\r"
	for _, c := range []struct {
		name, msg string
		wantAR    bool
		quoted    bool // the sender's ACK names the marker
	}{
		{"MSH-12 version", "MSH|^~\\&|" + m + "|" + m + "|" + m + "|" + m + "|20260101||ADT^A01|CTRL-LEAK-1|P|" + m + "\rPID|1||" + m + "\r", true, true},
		{"first segment", m + "|" + m + "\r" + good, true, false},
		{"DOE first segment", "DOE|" + m + "\r" + good, true, false},
		{"line break in a field", good + "PID|1||" + m + "\r" + m + " continues\r", true, false},
		{"MSH-1", "MSHP" + m + "|x|y\r", true, false},
		{"MSH-2", "MSH#" + m + "#A#B\r", true, false},
		{"MSH-9", "MSH|^~\\&|A|B|C|D|20260101||" + m + "^" + m + "|CTRL-LEAK-2|P|2.5\rPID|1||" + m + "\r", false, false},
	} {
		ack, err := sendHL7(t, r.mllpPort, []byte(c.msg))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if ar := strings.Contains(ack, "MSA|AR|"); ar != c.wantAR {
			t.Errorf("%s: ACK %q, want AR %v", c.name, ack, c.wantAR)
		}
		if c.quoted && !strings.Contains(ack, m) {
			t.Errorf("%s: ACK %q does not tell the sender what it sent", c.name, ack)
		}
	}
	// The traces of these messages (MSH-9 holds the marker in one) carry
	// no content either; the guard below scans the answer.
	var tr struct {
		Messages []struct {
			ControlID string `json:"control_id"`
			Type      string `json:"type"`
		} `json:"messages"`
	}
	op.must(t, command.Trace, map[string]any{"since": time.Now().Add(-time.Hour).Format(time.RFC3339)}).decode(t, &tr)
	if len(tr.Messages) == 0 {
		t.Error("trace over MQTT found none of the accepted messages; the test saw nothing")
	}
	var lines []string
	op.must(t, command.TailLog, map[string]any{"lines": 1000}).decode(t, &lines)
	joined := strings.Join(lines, "\n")
	if !strings.Contains(joined, "message rejected (AR)") {
		t.Fatalf("tail-log holds no rejection line; the test saw nothing:\n%s", joined)
	}
	for _, l := range lines {
		if strings.Contains(l, m) {
			t.Errorf("tail-log line carries message content: %s", l)
		}
	}
	for _, msg := range op.Log.All() {
		if msg.Topic != op.base+"cmd/req" && logtest.Leaks(msg.Payload) {
			b, _ := json.Marshal(string(msg.Payload))
			t.Errorf("MQTT %s carries message content: %s", msg.Topic, b)
		}
	}
}
