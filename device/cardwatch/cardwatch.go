// Package cardwatch keeps an eye on the card under the spool: once a minute
// it reads the block device's write counter and the eMMC's own wear
// estimates (board/blockdev), keeps what health publishes, a bytes-per-day
// rate, and raises storage_wearing when the card says it is wearing out.
package cardwatch

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hl7edge/hl7edge/board/blockdev"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// Reader reads the block device holding a directory; blockdev.Finder is
// the real one.
type Reader interface {
	Read(dir string) (blockdev.Reading, error)
}

// Every is how often the device is read: the write rate needs samples, the
// wear changes in months.
const Every = time.Minute

// Window is the longest stretch the write rate is taken over. Until a day
// has been seen the rate is what was seen since the daemon started (and
// health says how long that was), scaled to a day.
const Window = 24 * time.Hour

// Watch samples one spool directory's device. It outlives the pipeline's
// restarts (the appliance keeps one per spool directory), so the rate and
// the alarms raised survive a configuration change.
type Watch struct {
	dir  string
	read Reader
	now  func() time.Time

	mu        sync.Mutex
	last      health.StorageDevice
	samples   []sample // this device's, oldest first, spanning at most Window
	device    string   // whose samples they are
	announced blockdev.PreEOL
}

type sample struct {
	at      time.Time
	sectors uint64
}

// New watches the device holding dir. now may be nil (time.Now).
func New(dir string, r Reader, now func() time.Time) *Watch {
	if now == nil {
		now = time.Now
	}
	unknown := health.StorageDevice{PreEOL: "unknown", LifeUsedA: "unknown", LifeUsedB: "unknown", Error: "not read yet"}
	return &Watch{dir: dir, read: r, now: now, last: unknown}
}

// Dir is the directory watched.
func (w *Watch) Dir() string { return w.dir }

// Snapshot is the last sample, for the health snapshot.
func (w *Watch) Snapshot() health.StorageDevice {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// Run samples now and then every interval (Every when 0) until ctx ends,
// calling alarm when the card's pre-EOL state rises to warning or urgent.
func (w *Watch) Run(ctx context.Context, every time.Duration, alarm func(kind, detail string)) error {
	if every <= 0 {
		every = Every
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		w.Sample(alarm)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sample reads the device once, updates the snapshot and raises the alarm
// when the pre-EOL state is worse than any raised before.
func (w *Watch) Sample(alarm func(kind, detail string)) {
	r, err := w.read.Read(w.dir)
	now := w.now()
	w.mu.Lock()
	if err != nil {
		w.last = health.StorageDevice{PreEOL: "unknown", LifeUsedA: "unknown", LifeUsedB: "unknown",
			Error: fmt.Sprintf("spool.dir: %v; the card's wear and writes are unknown", err)}
		w.samples, w.device = nil, ""
		w.mu.Unlock()
		return
	}
	w.last = health.StorageDevice{BlockDevice: r.Device, Disk: r.Disk,
		PreEOL: r.PreEOL.String(), LifeUsedA: r.LifeA.String(), LifeUsedB: r.LifeB.String()}
	w.count(r, now)
	raise := r.PreEOL >= blockdev.PreEOLWarning && r.PreEOL > w.announced
	if raise {
		w.announced = r.PreEOL
	}
	w.mu.Unlock()
	if raise && alarm != nil {
		alarm(AlarmStorageWearing, Detail(r))
	}
}

// count adds a sample of the write counter and sets the figures from it.
// A counter that went back (another device, a 32-bit counter that wrapped)
// starts the window again rather than report a negative or huge rate.
func (w *Watch) count(r blockdev.Reading, now time.Time) {
	if !r.WrittenKnown {
		w.samples, w.device = nil, ""
		return
	}
	if r.Device != w.device || (len(w.samples) > 0 && r.SectorsWritten < w.samples[len(w.samples)-1].sectors) {
		w.samples, w.device = nil, r.Device
	}
	w.samples = append(w.samples, sample{at: now, sectors: r.SectorsWritten})
	for len(w.samples) > 1 && now.Sub(w.samples[0].at) > Window {
		w.samples = w.samples[1:]
	}
	written := int64(r.SectorsWritten * blockdev.SectorBytes)
	w.last.BytesWritten = &written
	first := w.samples[0]
	span := now.Sub(first.at)
	if span < Every/2 {
		return // one sample, or two too close to say anything
	}
	delta := float64((r.SectorsWritten - first.sectors) * blockdev.SectorBytes)
	perDay := int64(delta * float64(24*time.Hour) / float64(span))
	w.last.BytesPerDay = &perDay
	w.last.RateWindowSeconds = int64(span / time.Second)
}

// Detail is the alarm's sentence for the person at the box: what the card
// says, what it means and what to do.
func Detail(r blockdev.Reading) string {
	life := fmt.Sprintf("life used %s (type A), %s (type B)", r.LifeA, r.LifeB)
	if r.PreEOL >= blockdev.PreEOLUrgent {
		return fmt.Sprintf("storage card %s under the spool reports pre-EOL URGENT: 90%% of its spare blocks are used up (%s); "+
			"it may soon fail writes and the box would then answer every sender AE: replace the card now (docs/operations.md, \"Storage card wear\")", r.Disk, life)
	}
	return fmt.Sprintf("storage card %s under the spool reports pre-EOL warning: 80%% of its spare blocks are used up (%s); "+
		"it works for now: order a replacement card and swap it at the next visit (docs/operations.md, \"Storage card wear\")", r.Disk, life)
}
