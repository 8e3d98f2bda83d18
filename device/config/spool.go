package config

import (
	"fmt"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
	"github.com/hl7edge/hl7edge/storage"
)

// Spool is the `spool:` block as people write it (sizes such as 2GiB,
// durations such as 168h); the spool takes it as storage.Config, in plain
// values, and knows nothing of the file. storage/sample.yaml documents it.
type Spool struct {
	Dir                    string         `yaml:"dir"`
	MaxBytes               units.Size     `yaml:"max_bytes"`
	MinFreeDisk            units.Size     `yaml:"min_free_disk"`
	EncryptionKeyFile      string         `yaml:"encryption_key_file"`
	RememberFor            units.Duration `yaml:"remember_ids_for"`
	UndeliverableRetention units.Duration `yaml:"undeliverable_retention"`
	SegmentMessages        int            `yaml:"segment_messages"`
	ValueLogCleanup        units.Duration `yaml:"value_log_cleanup"`
	// Retain keeps delivered messages this long for replay (left out: 72h;
	// 0s: off), within RetainMaxBytes; TraceRetain keeps each message's
	// trace (left out: 30 days; 0s: off), within TraceMaxBytes.
	Retain         *units.Duration `yaml:"retain"`
	RetainMaxBytes units.Size      `yaml:"retain_max_bytes"`
	TraceRetain    *units.Duration `yaml:"trace_retain"`
	TraceMaxBytes  units.Size      `yaml:"trace_max_bytes"`
}

// Storage is the block as the spool takes it.
func (s Spool) Storage() storage.Config {
	return storage.Config{
		Dir: s.Dir, MaxBytes: int64(s.MaxBytes), MinFreeDisk: int64(s.MinFreeDisk), EncryptionKeyFile: s.EncryptionKeyFile,
		RememberFor: s.RememberFor.D(), UndeliverableRetention: s.UndeliverableRetention.D(),
		SegmentMessages: s.SegmentMessages, ValueLogCleanup: s.ValueLogCleanup.D(),
		Retain: duration(s.Retain), RetainMaxBytes: int64(s.RetainMaxBytes),
		TraceRetain: duration(s.TraceRetain), TraceMaxBytes: int64(s.TraceMaxBytes),
	}
}

func duration(d *units.Duration) *time.Duration {
	if d == nil {
		return nil
	}
	v := d.D()
	return &v
}

func fileDuration(d *time.Duration) *units.Duration {
	if d == nil {
		return nil
	}
	v := units.Duration(*d)
	return &v
}

// SetDefaults fills the spool's defaults (storage.Config.SetDefaults).
func (s *Spool) SetDefaults() {
	c := s.Storage()
	c.SetDefaults()
	*s = Spool{
		Dir: c.Dir, MaxBytes: units.Size(c.MaxBytes), MinFreeDisk: units.Size(c.MinFreeDisk), EncryptionKeyFile: c.EncryptionKeyFile,
		RememberFor: units.Duration(c.RememberFor), UndeliverableRetention: units.Duration(c.UndeliverableRetention),
		SegmentMessages: c.SegmentMessages, ValueLogCleanup: units.Duration(c.ValueLogCleanup),
		Retain: fileDuration(c.Retain), RetainMaxBytes: units.Size(c.RetainMaxBytes),
		TraceRetain: fileDuration(c.TraceRetain), TraceMaxBytes: units.Size(c.TraceMaxBytes),
	}
}

// Validate checks the block as the spool will (storage.Config.Validate),
// saying sizes as the file does.
func (s Spool) Validate() error {
	if s.MaxBytes < 16<<20 {
		return fmt.Errorf("spool.max_bytes %s is below the 16MiB minimum: raise it (2GiB suits a 32 GB SD card)", s.MaxBytes)
	}
	if s.RetainMaxBytes > s.MaxBytes {
		return fmt.Errorf("spool.retain_max_bytes %s is above spool.max_bytes %s: retained messages share max_bytes; lower it or leave it out for half of max_bytes", s.RetainMaxBytes, s.MaxBytes)
	}
	if s.TraceMaxBytes < 1<<20 {
		return fmt.Errorf("spool.trace_max_bytes %s is below the 1MiB minimum: raise it or leave it out for the default of 256MiB", s.TraceMaxBytes)
	}
	c := s.Storage()
	return c.Validate()
}
