// Package samples holds the commented sample of every block of the
// configuration file that is not a source or destination type's (those
// come with their types): the ones the packages that read them keep
// beside their code, and the device, admin, log, trust and firmware
// blocks, kept here. `hl7edge config sample` prints them; the package
// installs them under /usr/share/doc/hl7edge/samples.
package samples

import (
	_ "embed"

	"github.com/hl7edge/hl7edge/board"
	"github.com/hl7edge/hl7edge/device/mqttagent"
	"github.com/hl7edge/hl7edge/storage"
)

var (
	//go:embed device.yaml
	deviceYAML []byte
	//go:embed trust.yaml
	trustYAML []byte
	//go:embed firmware.yaml
	firmwareYAML []byte
)

// Section is one block's sample.
type Section struct {
	Names []string // the block names that print it (board and leds share one)
	YAML  []byte
}

// Sections are every block's sample, in the order of the configuration file.
func Sections() []Section {
	return []Section{
		{Names: []string{"device", "admin", "log"}, YAML: deviceYAML},
		{Names: []string{"spool"}, YAML: storage.Sample},
		{Names: []string{"board", "leds"}, YAML: board.Sample},
		{Names: []string{"mqtt"}, YAML: mqttagent.Sample},
		{Names: []string{"trust"}, YAML: trustYAML},
		{Names: []string{"firmware"}, YAML: firmwareYAML},
	}
}
