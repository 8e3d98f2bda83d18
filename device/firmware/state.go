// Package firmware updates the gateway's own program from a signed image
// and rolls it back by itself when the new one does not prove healthy.
//
// The installed binary (/usr/bin/hl7edge, read-only under the unit's
// ProtectSystem=strict) is the fallback and, at every start, the launcher:
// it reads the state file in firmware.dir and, when an image there is
// committed or on trial, replaces itself with it (exec: same PID, so the
// unit's notify socket and watchdog carry over). A running gateway never
// starts its successor itself; it records the switch and exits, and the
// service manager's Restart= starts the launcher again. A service must not
// replace itself from inside its own process tree: the new version has to
// survive the old one's end.
//
// The states follow thin-edge.io's firmware workflow and Mender's and
// RAUC's rule that an update counts only once the device is healthy on it:
//
//	downloading → verifying → trial → committed
//	                  ↓          ↓
//	              rejected   rolled_back
package firmware

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hl7edge/hl7edge/device/atomicfile"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// Config is the `firmware:` block.
type Config struct {
	// Dir holds the images and the state file; default <state dir>/firmware
	// (/var/lib/hl7edge/firmware), writable under the unit's StateDirectory.
	Dir string `yaml:"dir"`
	// CAFile adds roots to the system roots for the download server.
	CAFile string `yaml:"ca_file"`
	// Trial is how long a new version must stay healthy to be kept.
	Trial units.Duration `yaml:"trial"`
	// MaxBytes bounds an image download.
	MaxBytes units.Size `yaml:"max_bytes"`
}

// Defaults.
const (
	DefaultTrial    = 2 * time.Minute
	DefaultMaxBytes = 128 << 20
	minTrial        = time.Second
)

// SetDefaults fills what is left out; stateDir is where Dir goes by default.
func (c *Config) SetDefaults(stateDir string) {
	if c.Dir == "" {
		c.Dir = filepath.Join(stateDir, "firmware")
	}
	if c.Trial == 0 {
		c.Trial = units.Duration(DefaultTrial)
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
}

// Validate checks the block after SetDefaults.
func (c *Config) Validate() error {
	var errs []error
	if c.Trial.D() < minTrial {
		errs = append(errs, fmt.Errorf("firmware.trial %s: use at least %s (default %s)", c.Trial, minTrial, DefaultTrial))
	}
	if c.MaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("firmware.max_bytes %s: use at least 1MiB (default 128MiB)", c.MaxBytes))
	}
	return errors.Join(errs...)
}

// Phase is where an update stands.
type Phase string

// Phases, as published on hl7edge/<device>/firmware.
const (
	Downloading Phase = "downloading"
	Verifying   Phase = "verifying"
	Trial       Phase = "trial"
	Committed   Phase = "committed"
	RolledBack  Phase = "rolled_back"
	Rejected    Phase = "rejected"
)

// InProgress says whether an update is under way (a second one is refused).
func (p Phase) InProgress() bool { return p == Downloading || p == Verifying || p == Trial }

// State is the state file, firmware.dir/state.json.
type State struct {
	State    Phase     `json:"state"`
	Version  string    `json:"version"`            // the version this update is about
	Previous string    `json:"previous,omitempty"` // the version that ran before it
	Reason   string    `json:"reason,omitempty"`
	Command  string    `json:"command,omitempty"` // id of the firmware-update command
	Updated  time.Time `json:"updated"`

	// The launcher's bookkeeping; not published.
	Image       string        `json:"image,omitempty"`        // Version's image, a file name in Dir
	Good        string        `json:"good,omitempty"`         // image to run outside a trial; "" = the installed binary
	GoodVersion string        `json:"good_version,omitempty"` // its version
	Starts      int           `json:"starts,omitempty"`       // launches of the trial image
	Trial       time.Duration `json:"trial,omitempty"`
	TrialEnds   time.Time     `json:"trial_ends,omitempty"`
	Before      []string      `json:"before,omitempty"`    // components up when the update began
	Announced   bool          `json:"announced,omitempty"` // the rollback alarm went out
	// Installed is the installed binary's version when the update began: a
	// package upgrade since then replaces the images (the operator's newer
	// package must not be shadowed by an older image).
	Installed string `json:"installed,omitempty"`
}

// Public is what goes on the retained firmware topic.
type Public struct {
	State    Phase     `json:"state"`
	Version  string    `json:"version"`
	Previous string    `json:"previous,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Command  string    `json:"command,omitempty"`
	Updated  time.Time `json:"updated"`
	Running  string    `json:"running"` // the version of this process
}

// StateFile is the state file's name in Dir.
const StateFile = "state.json"

// Load reads the state; ok is false when there is none (never updated).
func Load(dir string) (State, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return State{}, false, nil
	}
	if err != nil {
		return State{}, false, fmt.Errorf("firmware state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, false, fmt.Errorf("firmware state %s is not JSON: %w; remove it to run the installed version", filepath.Join(dir, StateFile), err)
	}
	return s, true, nil
}

// Save writes the state atomically (temporary file, fsync, rename, fsync
// dir), its syncs through gates, those of the spool beside it (nil: alone
// on the file system, as in the launcher).
func Save(gates *syncgate.Gates, dir string, s State) error {
	s.Updated = time.Now().UTC()
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	path, data := filepath.Join(dir, StateFile), append(b, '\n')
	err = atomicfile.Write(gates, path, data, 0o640)
	if errors.Is(err, syncgate.ErrFailedSince) {
		// Another writer's flush failed while this one was written: the
		// old state stays, and one more write, begun after the failure,
		// is told the truth about its own.
		err = atomicfile.Write(gates, path, data, 0o640)
	}
	if errors.Is(err, syncgate.ErrFailedSince) {
		return fmt.Errorf("firmware state: %w; disk syncs on the card failed twice while it was written: check the storage health (docs/power-loss.md)", err)
	}
	if err != nil {
		return fmt.Errorf("firmware state: %w", err)
	}
	return nil
}
