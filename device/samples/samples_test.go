package samples_test

import (
	"bytes"
	"slices"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/device/samples"
)

// TestSectionsAreValidBlocks: every sample decodes into the configuration
// with no unknown key (a sample with a typo teaches the typo), and every
// block of the configuration file has a sample or comes with its types.
func TestSectionsAreValidBlocks(t *testing.T) {
	var names []string
	for _, s := range samples.Sections() {
		var c config.Config
		dec := yaml.NewDecoder(bytes.NewReader(s.YAML))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil {
			t.Errorf("sample %v: %v", s.Names, err)
		}
		names = append(names, s.Names...)
	}
	for _, block := range []string{"device", "spool", "admin", "log", "mqtt", "leds", "board", "trust", "firmware"} {
		if !slices.Contains(names, block) {
			t.Errorf("no sample for the %s block", block)
		}
	}
}
