package config

import (
	"strings"
	"testing"
)

// TestDeviceLabels: labels in the device block are read as a map, and a
// label the fleet tools could not select by (a reserved or malformed key,
// a value with the selector's separators, too many) is refused by name.
func TestDeviceLabels(t *testing.T) {
	base := "spool: {dir: /tmp/x}\nsources: []\ndestinations: []\n"
	c, err := Parse([]byte("device: {id: gw-1, labels: {site: north, ring: canary, ward: icu-2}}\n" + base))
	if err != nil {
		t.Fatal(err)
	}
	if c.Device.Labels["site"] != "north" || c.Device.Labels["ring"] != "canary" || len(c.Device.Labels) != 3 {
		t.Fatalf("labels read as %v", c.Device.Labels)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"{id: north}", `device.labels: key "id" is reserved`},
		{`{"Site!": north}`, `device.labels: key "Site!"`},
		{`{site: "a,b"}`, `device.labels.site: value "a,b"`},
		{`{site: ""}`, `device.labels.site: value ""`},
	} {
		_, err := Parse([]byte("device: {id: gw-1, labels: " + tc.yaml + "}\n" + base))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("labels %s: got %v, want an error containing %q", tc.yaml, err, tc.want)
		}
	}
	many := "{"
	for i := range MaxLabels + 1 {
		many += "k" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ": v,"
	}
	many += "}"
	if _, err := Parse([]byte("device: {id: gw-1, labels: " + many + "}\n" + base)); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("%d labels: got %v, want the limit named", MaxLabels+1, err)
	}
}
