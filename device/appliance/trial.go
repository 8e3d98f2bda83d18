package appliance

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/hl7edge/hl7edge/device/atomicfile"
)

// A config-apply's trial must outlive the process that began it. The
// previous configuration and the trial were only in memory, so a power
// cut, a crash or a service restart during the grace period left the new
// configuration running for good, untested, with nothing to roll back to.
// The trial record is written before the new file and removed when the
// trial ends; a process that starts and finds it treats the trial as cut
// short and puts the previous configuration back, as the firmware launcher
// does with an unfinished trial (docs/operations.md).

// trialRecord is the file beside the configuration while a trial runs.
type trialRecord struct {
	ID       string    `json:"id"`          // the command that applied it
	Previous string    `json:"previous"`    // the configuration to go back to
	Next     string    `json:"next_sha256"` // the configuration on trial
	Began    time.Time `json:"began"`
}

func trialPath(configPath string) string { return configPath + ".trial" }

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// beginTrial records a trial of next before next is written.
func (a *Appliance) beginTrial(id string, previous, next []byte) error {
	rec, err := json.Marshal(trialRecord{ID: id, Previous: string(previous), Next: digest(next), Began: time.Now().UTC()})
	if err != nil {
		return err
	}
	return a.writeConfig(trialPath(a.o.ConfigPath), rec)
}

// endTrial removes the record once the trial is over, kept or rolled back.
// A record a cut brings back would roll a kept configuration back at the
// next start: said in the log, so the operator knows why.
func (a *Appliance) endTrial(id string) {
	if err := atomicfile.Remove(a.o.Gates, trialPath(a.o.ConfigPath)); err != nil {
		fmt.Fprintf(a.o.LogOut, "hl7edge: the trial of the configuration from command %s is over, but its record could not be removed (%v): a restart would roll the configuration back; remove %s by hand\n",
			id, err, trialPath(a.o.ConfigPath))
	}
}

// recoverTrial runs once, when the process starts: a trial record there
// means the process ended during a trial. The configuration on trial is
// rolled back; one that never landed, or a file edited by hand since, is
// left as it is.
func (a *Appliance) recoverTrial() error {
	path := trialPath(a.o.ConfigPath)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the configuration trial record %s: %w; remove it to run %s as it is", path, err, a.o.ConfigPath)
	}
	var rec trialRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		fmt.Fprintf(a.o.LogOut, "hl7edge: configuration trial record %s is unreadable (%v): removed; %s runs as it is\n", path, err, a.o.ConfigPath)
		a.endTrial("unknown")
		return nil
	}
	cur, err := os.ReadFile(a.o.ConfigPath)
	if err != nil {
		return fmt.Errorf("read %s to end the trial of the configuration from command %s: %w", a.o.ConfigPath, rec.ID, err)
	}
	switch {
	case digest(cur) == rec.Next:
		return a.rollBackCutTrial(rec)
	case bytes.Equal(cur, []byte(rec.Previous)):
		fmt.Fprintf(a.o.LogOut, "hl7edge: the configuration from command %s was never in place (the gateway stopped while it was written); %s is unchanged\n", rec.ID, a.o.ConfigPath)
	default:
		fmt.Fprintf(a.o.LogOut, "hl7edge: %s changed since the configuration from command %s went on trial: left as it is\n", a.o.ConfigPath, rec.ID)
	}
	a.endTrial(rec.ID)
	return nil
}

// rollBackCutTrial puts the previous configuration back after the process
// ended during rec's trial, and says so on the next box's MQTT.
func (a *Appliance) rollBackCutTrial(rec trialRecord) error {
	if err := a.writeConfig(a.o.ConfigPath, []byte(rec.Previous)); err != nil {
		return fmt.Errorf("the gateway stopped during the trial of the configuration from command %s, and putting the previous one back failed: %w; the record %s still holds it",
			rec.ID, err, trialPath(a.o.ConfigPath))
	}
	detail := fmt.Sprintf("configuration from command %s rolled back: the gateway stopped (restart, crash or power cut) during its trial, begun %s; apply it again if it is wanted",
		rec.ID, rec.Began.Format(time.RFC3339))
	fmt.Fprintf(a.o.LogOut, "hl7edge: %s\n", detail)
	a.settle(rec.ID, ApplyRolledBack, detail)
	a.mu.Lock()
	a.notices = append(a.notices, [2]string{AlarmConfigRolledBack, detail})
	a.mu.Unlock()
	a.endTrial(rec.ID)
	return nil
}
