package cardwatch

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/board/blockdev/blockdevtest"
)

type alarms []string

func (a *alarms) raise(kind, detail string) { *a = append(*a, kind+": "+detail) }

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// emmc is a CM4-style eMMC with the spool on mmcblk0p2.
func emmc(t *testing.T) (*blockdevtest.Tree, string) {
	tr := blockdevtest.New(t)
	tr.Disk("mmc", "mmcblk0", 179, 0)
	tr.Partition("mmcblk0", "mmcblk0p2", 179, 2, 2)
	tr.Stat("mmcblk0p2", 1000)
	tr.EMMC("mmcblk0", 0x07, 0x06, 0x01)
	return tr, tr.Dir("mmcblk0p2")
}

// storage_wearing goes out once when the card reaches warning and once
// more, with the urgent text, when it reaches urgent; never while normal,
// and not again each minute the state holds.
func TestWearingRaisedAtWarningAndAgainAtUrgent(t *testing.T) {
	tr, dir := emmc(t)
	w := New(dir, tr.Finder(), nil)
	var got alarms
	w.Sample(got.raise)
	if len(got) != 0 || w.Snapshot().PreEOL != "normal" {
		t.Fatalf("normal card: alarms %q, pre_eol %q", got, w.Snapshot().PreEOL)
	}
	tr.EMMC("mmcblk0", 0x09, 0x08, 0x02)
	w.Sample(got.raise)
	w.Sample(got.raise)
	if len(got) != 1 {
		t.Fatalf("after two samples at warning: %d alarms %q, want 1", len(got), got)
	}
	for _, want := range []string{"storage_wearing: ", "mmcblk0", "pre-EOL warning", "80-90% (type A)", "order a replacement card"} {
		if !strings.Contains(got[0], want) {
			t.Errorf("warning alarm %q lacks %q", got[0], want)
		}
	}
	tr.EMMC("mmcblk0", 0x0A, 0x0B, 0x03)
	w.Sample(got.raise)
	w.Sample(got.raise)
	if len(got) != 2 {
		t.Fatalf("after urgent: %d alarms %q, want 2", len(got), got)
	}
	for _, want := range []string{"pre-EOL URGENT", "exceeded (type B)", "replace the card now"} {
		if !strings.Contains(got[1], want) {
			t.Errorf("urgent alarm %q lacks %q", got[1], want)
		}
	}
	s := w.Snapshot()
	if s.PreEOL != "urgent" || s.LifeUsedA != "90-100%" || s.LifeUsedB != "exceeded" || s.Disk != "mmcblk0" || s.BlockDevice != "mmcblk0p2" {
		t.Fatalf("snapshot %+v", s)
	}
}

// An SD card reports no wear: unknown, no alarm; its writes still count.
func TestSDCardIsUnknownNotHealthy(t *testing.T) {
	tr := blockdevtest.New(t)
	tr.Disk("mmc", "mmcblk0", 179, 0)
	tr.Partition("mmcblk0", "mmcblk0p2", 179, 2, 2)
	tr.Stat("mmcblk0p2", 4)
	w := New(tr.Dir("mmcblk0p2"), tr.Finder(), nil)
	var got alarms
	w.Sample(got.raise)
	s := w.Snapshot()
	if len(got) != 0 || s.PreEOL != "unknown" || s.LifeUsedA != "unknown" || s.LifeUsedB != "unknown" {
		t.Fatalf("SD card: alarms %q, snapshot %+v", got, s)
	}
	if s.BytesWritten == nil || *s.BytesWritten != 2048 {
		t.Fatalf("bytes written %v, want 4 sectors = 2048", s.BytesWritten)
	}
}

// Before the first sample, and when the device cannot be found, everything
// is unknown and the error says why.
func TestUnreadableIsUnknown(t *testing.T) {
	tr := blockdevtest.New(t)
	w := New(tr.Dir(""), tr.Finder(), nil)
	if s := w.Snapshot(); s.PreEOL != "unknown" || s.Error == "" {
		t.Fatalf("before the first sample: %+v", s)
	}
	w.Sample(nil)
	s := w.Snapshot()
	if s.PreEOL != "unknown" || s.BytesWritten != nil || s.BytesPerDay != nil || !strings.Contains(s.Error, "no block device") {
		t.Fatalf("spool on tmpfs: %+v", s)
	}
}

// A missing stat leaves the byte figures out (unknown), not zero.
func TestMissingStatLeavesBytesUnknown(t *testing.T) {
	tr, dir := emmc(t)
	c := &clock{time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)}
	w := New(dir, tr.Finder(), c.now)
	w.Sample(nil)
	tr.Remove("mmcblk0p2", "stat")
	c.t = c.t.Add(Every)
	w.Sample(nil)
	s := w.Snapshot()
	if s.BytesWritten != nil || s.BytesPerDay != nil || s.RateWindowSeconds != 0 {
		t.Fatalf("without stat: written %v per day %v window %d", s.BytesWritten, s.BytesPerDay, s.RateWindowSeconds)
	}
	if s.PreEOL != "normal" {
		t.Fatalf("pre_eol %q, want normal still read", s.PreEOL)
	}
}

// The rate is what was written over the window seen, scaled to a day: a
// minute after start from that minute, after a day from the last 24 hours
// only; a counter that goes back restarts the window.
func TestBytesPerDayOverTheLastDay(t *testing.T) {
	tr, dir := emmc(t)
	c := &clock{time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)}
	w := New(dir, tr.Finder(), c.now)
	sectors := uint64(1000)
	step := func(n uint64) {
		c.t = c.t.Add(Every)
		sectors += n
		tr.Stat("mmcblk0p2", sectors)
		w.Sample(nil)
	}
	w.Sample(nil)
	if s := w.Snapshot(); s.BytesPerDay != nil {
		t.Fatalf("rate %d from one sample", *s.BytesPerDay)
	}
	step(2048) // 1 MiB in a minute
	s := w.Snapshot()
	if s.BytesPerDay == nil || *s.BytesPerDay != 1440<<20 || s.RateWindowSeconds != 60 {
		t.Fatalf("after a minute of 1 MiB: %v per day over %ds, want %d over 60s", s.BytesPerDay, s.RateWindowSeconds, 1440<<20)
	}
	for range 24 * 60 { // a quiet day: the busy minute leaves the window
		step(0)
	}
	s = w.Snapshot()
	if *s.BytesPerDay != 0 || s.RateWindowSeconds != 86400 {
		t.Fatalf("after a quiet day: %d per day over %ds, want 0 over 86400s", *s.BytesPerDay, s.RateWindowSeconds)
	}
	if len(w.samples) > 24*60+1 {
		t.Fatalf("%d samples kept, want at most a day's", len(w.samples))
	}
	for range 60 { // then an hour at 8 KiB a minute
		step(16)
	}
	if s = w.Snapshot(); *s.BytesPerDay != 60*8<<10 {
		t.Fatalf("a day with one busy hour: %d per day, want %d", *s.BytesPerDay, 60*8<<10)
	}
	if *s.BytesWritten != int64(sectors*512) {
		t.Fatalf("written %d, want %d", *s.BytesWritten, sectors*512)
	}
	c.t = c.t.Add(Every)
	tr.Stat("mmcblk0p2", 10) // the counter went back: a new device, a wrap
	w.Sample(nil)
	if s = w.Snapshot(); s.BytesPerDay != nil || *s.BytesWritten != 5120 {
		t.Fatalf("after the counter went back: per day %v written %d, want no rate and 5120", s.BytesPerDay, *s.BytesWritten)
	}
}

// Run samples at once and stops with its context.
func TestRunSamplesAtOnceAndStops(t *testing.T) {
	tr, dir := emmc(t)
	tr.EMMC("mmcblk0", 0x09, 0x08, 0x02)
	w := New(dir, tr.Finder(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	raised := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, time.Hour, func(kind, _ string) { raised <- kind }) }()
	if k := <-raised; k != AlarmStorageWearing {
		t.Fatalf("raised %q", k)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
