package gateway_test

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/hl7edge/hl7edge/pipeline/gateway"
)

func TestLanesValidate(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, wantErr string
		lanes               int
		key                 string
	}{
		{"default", "type: webservice", "", 0, "PID-3.1"},
		{"eight lanes on MRN", "type: webservice\nlanes: 8\nlane_key: pid-2", "", 8, "PID-2"},
		{"too many", "type: webservice\nlanes: 65", "lanes 65: use 1", 0, ""},
		{"negative", "type: webservice\nlanes: -1", "lanes -1", 0, ""},
		{"mllp with one connection", "type: mllp\nlanes: 2", "takes 1 message(s) at a time as configured", 0, ""},
		{"mllp with more lanes than connections", "type: mllp\nconnections: 2\nlanes: 3", "takes 2 message(s) at a time", 0, ""},
		{"mllp with as many connections", "type: mllp\nconnections: 4\nlanes: 4", "", 4, "PID-3.1"},
		{"bad key", "type: webservice\nlanes: 2\nlane_key: PID3", "lane_key: field path", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := "name: d\n" + tc.yaml + "\n"
			if strings.Contains(tc.yaml, "webservice") {
				text += "url: https://ehr.example/ping\nlogon_id: x\npassword_file: /etc/hostname\n"
			} else {
				text += "address: 127.0.0.1:2575\n"
			}
			var d gateway.Destination
			if err := yaml.Unmarshal([]byte(text), &d); err != nil {
				t.Fatal(err)
			}
			err := gateway.Validate(nil, nil, []gateway.Destination{d})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if d.Lanes != tc.lanes || d.LaneKeyPath().String() != tc.key {
					t.Fatalf("lanes %d key %s, want %d %s", d.Lanes, d.LaneKeyPath(), tc.lanes, tc.key)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
			}
		})
	}
}
