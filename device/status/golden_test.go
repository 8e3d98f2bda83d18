package status

import (
	"bytes"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/build/golden"
	"github.com/hl7edge/hl7edge/device/cardwatch"
	"github.com/hl7edge/hl7edge/device/frontpanel"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// The status screen in every state a technician can meet, pinned in
// testdata/*.golden: a reworded line or a broken table fails here.
func TestStatusScreenGolden(t *testing.T) {
	now := time.Date(2026, 12, 7, 9, 30, 0, 0, time.UTC)
	earlier := now.Add(-42 * time.Minute)
	written, perDay := int64(57<<30), int64(700<<20)
	card := func(preEOL, a, b string) *health.StorageDevice {
		return &health.StorageDevice{BlockDevice: "mmcblk0p2", Disk: "mmcblk0", PreEOL: preEOL, LifeUsedA: a, LifeUsedB: b,
			BytesWritten: &written, BytesPerDay: &perDay, RateWindowSeconds: 86400}
	}
	base := func() health.Snapshot {
		return health.Snapshot{
			StorageDevice: card("normal", "10-20%", "0-10%"),
			Device:        "ward4-gw", Version: "1.6.0", Time: now, UptimeSeconds: 3 * 3600, ClockSynced: true,
			Sources: []health.ComponentSnapshot{
				{Name: "lab", Type: "mllp", State: health.Up, Since: earlier, Counters: map[string]uint64{health.CounterReceived: 1204}},
				{Name: "analyzer", Type: "serial", State: health.Up, Since: earlier, Counters: map[string]uint64{health.CounterReceived: 88}},
			},
			Destinations: []health.ComponentSnapshot{
				{Name: "ehr", Type: "webservice", Upstream: true, State: health.Up, Since: earlier},
				{Name: "lis", Type: "mllp", State: health.Up, Since: earlier},
			},
			Services: []health.ComponentSnapshot{{Name: "mqtt", Type: "mqtt", State: health.Up, Since: earlier}},
			Spool:    health.SpoolSnapshot{Messages: 3, Bytes: 3 << 10, MaxBytes: 2 << 30, DiskBytes: 9 << 20, FreeDiskBytes: 20 << 30},
		}
	}
	errAt := now.Add(-30 * time.Second)
	ready := frontpanel.Inputs{Ready: true, MQTTUp: true}
	for _, c := range []struct {
		name string
		edit func(*health.Snapshot)
		in   frontpanel.Inputs
	}{
		{"healthy", func(*health.Snapshot) {}, ready},
		{"starting", func(*health.Snapshot) {}, frontpanel.Inputs{MQTTUp: true}},
		{"fault1-spool-full", func(s *health.Snapshot) {
			s.Spool.Bytes, s.Spool.Full = s.Spool.MaxBytes, true
			s.Alarms = []health.Alarm{{Kind: health.AlarmSpoolFull, Detail: "spool is full (2.0GiB of 2.0GiB): senders are answered AE", Since: earlier, Last: earlier, Count: 1}}
		}, ready},
		{"fault2-upstream-refusing", func(s *health.Snapshot) {
			s.Destinations[0].State, s.Destinations[0].Queued, s.Destinations[0].OldestAgeSeconds = health.Down, 12, 95
			s.Destinations[0].Counters = map[string]uint64{health.CounterExceptions: 3}
			s.Destinations[0].LastError, s.Destinations[0].LastErrorAt = "ping to ehr.example.org: EXCEPTION 2 (logon refused): check logon_id and password_file", &errAt
		}, ready},
		{"fault2-held", func(s *health.Snapshot) {
			s.Destinations[1].State, s.Destinations[1].Queued = health.Held, 4
			s.Destinations[1].LastError, s.Destinations[1].LastErrorAt = "receiver answered AR for message 7d0c1f52-0a5e-4c4e-9a43-1b2c3d4e5f60: refused for good", &errAt
		}, ready},
		{"fault3-serial-missing", func(s *health.Snapshot) {
			s.Sources[1].State = health.Missing
			s.Sources[1].LastError, s.Sources[1].LastErrorAt = "/dev/ttyUSB0: no such device: plug the adapter in; it is reopened when it returns", &errAt
		}, ready},
		{"fault4-clock", func(s *health.Snapshot) { s.ClockSynced = false }, ready},
		{"fault5-storage", func(s *health.Snapshot) {
			s.Spool.Error = "spool disk sync failed: sync 00007.mem: input/output error (messages are answered AE until it is re-opened from disk; check the card)"
			s.Spool.Reopens = 1
			s.Alarms = []health.Alarm{{Kind: health.AlarmStorageError, Detail: "spool storage fault in /var/lib/hl7edge/spool", Since: errAt, Last: errAt, Count: 6}}
		}, ready},
		{"card-wear-warning", func(s *health.Snapshot) {
			s.StorageDevice = card("warning", "80-90%", "70-80%")
			s.Alarms = []health.Alarm{{Kind: cardwatch.AlarmStorageWearing, Detail: "storage card mmcblk0 under the spool reports pre-EOL warning: 80% of its spare blocks are used up (life used 80-90% (type A), 70-80% (type B)); it works for now: order a replacement card and swap it at the next visit (docs/operations.md, \"Storage card wear\")", Since: earlier, Last: earlier, Count: 1}}
		}, ready},
		{"card-wear-unknown", func(s *health.Snapshot) {
			s.StorageDevice = card("unknown", "unknown", "unknown")
			s.StorageDevice.RateWindowSeconds = 180 // three minutes after the daemon started
		}, ready},
		{"card-unreadable", func(s *health.Snapshot) {
			s.StorageDevice = &health.StorageDevice{PreEOL: "unknown", LifeUsedA: "unknown", LifeUsedB: "unknown",
				Error: "spool.dir: /var/lib/hl7edge/spool (device 0:27): the file system has no block device (tmpfs, overlay, btrfs or a network file system); the card's wear and writes are unknown"}
		}, ready},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := base()
			c.edit(&s)
			var out bytes.Buffer
			Build(s, c.in).Render(&out)
			golden.Check(t, "status-"+c.name, out.Bytes())
		})
	}
}
