package mqttagent

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"
)

func TestParseRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		payload, id, name, why string
	}{
		{`{"id":"1","name":"health"}`, "1", "health", ""},
		{`{"id":"1","name":"dead.retry","args":{"destination":"ehr"},"expires":"2030-01-01T00:00:00Z"}`, "1", "dead.retry", ""},
		{`{"id":"1","name":"health","args":null}`, "1", "health", ""},
		{`{"id":"1","name":"health"`, "1", "", "not valid JSON"},
		{`{"id":"7","name":"health","expires":"tomorrow"}`, "7", "", "wrong types"},
		{`{"id":7,"name":"health"}`, "", "", "wrong types"},
		{`{"id":"1","name":"Health Now"}`, "1", "", "command name"},
		{`{"id":"1","name":"health","args":[1]}`, "1", "health", "args must be a JSON object"},
		{`{"id":"a` + "\\u0000" + `","name":"health"}`, "", "", "command id"},
		{`{"id":"` + strings.Repeat("x", 129) + `","name":"health"}`, "", "", "command id"},
		{`[]`, "", "", "wrong types"},
		{`{"id":"big","args":"` + strings.Repeat("x", MaxCommandBytes) + `"}`, "", "", "limit"},
	} {
		req, why := parseRequest([]byte(tc.payload))
		if tc.why == "" && why != "" || !strings.Contains(why, tc.why) {
			t.Errorf("%.60s: why = %q, want %q", tc.payload, why, tc.why)
		}
		if req.ID != tc.id || (tc.name != "" && req.Name != tc.name) {
			t.Errorf("%.60s: id %q name %q, want %q %q", tc.payload, req.ID, req.Name, tc.id, tc.name)
		}
	}
}

// reasonShapes are the rejection reasons parseRequest can give, with their
// numbers removed: a reason may depend on the payload's size and structure,
// never on its content.
func reasonShapes() map[string]bool {
	out := map[string]bool{}
	for _, p := range []string{
		`{"id":"1","name":"health"`, `{"id":1}`, `{"id":"a\u0000"}`, `{"id":"1","name":"X"}`,
		`{"id":"1","name":"a","args":1}`, `{"args":"` + strings.Repeat("x", MaxCommandBytes) + `"}`,
	} {
		_, why := parseRequest([]byte(p))
		out[stripDigits(why)] = true
	}
	return out
}

func stripDigits(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsDigit(r) {
			return -1
		}
		return r
	}, s)
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"id":"1","name":"health"}`,
		`{"id":"1","name":"pause","args":{"source":"monitors"},"expires":"2030-01-01T00:00:00Z"}`,
		`{"id":"1","name":"health"`, `{"id":"x","expires":"PID|1||MRN"}`, `{"id":"1","name":"DOE^JANE"}`,
		`null`, `[]`, `"x"`, `{"id":"\u0001"}`, `{"id":"1","args":[]}`, ``,
	} {
		f.Add([]byte(s))
	}
	shapes := reasonShapes()
	f.Fuzz(func(t *testing.T, b []byte) {
		req, why := parseRequest(b)
		if !validID(req.ID) {
			t.Fatalf("returned an invalid id %q", req.ID)
		}
		if why != "" {
			if !shapes[stripDigits(why)] {
				t.Fatalf("reason %q is not one of the fixed shapes: it may quote the payload", why)
			}
			return
		}
		if !nameRE.MatchString(req.Name) && req.Name != "" {
			t.Fatalf("accepted name %q", req.Name)
		}
		if len(req.Args) > 0 && string(req.Args) != "null" {
			var obj map[string]json.RawMessage
			if json.Unmarshal(req.Args, &obj) != nil {
				t.Fatalf("accepted args that are not an object: %s", req.Args)
			}
		}
	})
}
