package health

// StorageDevice is the block device that holds the spool (the card): its
// wear as the device itself reports it and what was written to it
// (docs/mqtt-api.md, "health"). What the device does not report is
// "unknown" or left out, never a healthy-looking value: an SD card reports
// no wear at all.
type StorageDevice struct {
	// BlockDevice is the device the spool's file system sits on: a
	// partition (mmcblk0p2), a whole disk, or dm-0/loop0. Its counters give
	// the bytes written.
	BlockDevice string `json:"block_device,omitempty"`
	// Disk is the physical disk whose wear is read (mmcblk0).
	Disk string `json:"disk,omitempty"`
	// PreEOL is an eMMC's pre-end-of-life state: "normal", "warning" (80%
	// of its reserved blocks used), "urgent" or "unknown".
	PreEOL string `json:"pre_eol"`
	// LifeUsedA and LifeUsedB are an eMMC's life time estimates for its two
	// kinds of memory: "0-10%" ... "90-100%", "exceeded" or "unknown".
	LifeUsedA string `json:"life_used_a"`
	LifeUsedB string `json:"life_used_b"`
	// BytesWritten is what BlockDevice's counter says was written since it
	// appeared (boot, for the card the system runs from); nil unknown.
	BytesWritten *int64 `json:"bytes_written_since_boot,omitempty"`
	// BytesPerDay is the write rate over the last RateWindowSeconds (up to
	// a day) scaled to a day; nil until the second sample, a minute after
	// the daemon started.
	BytesPerDay       *int64 `json:"bytes_written_per_day,omitempty"`
	RateWindowSeconds int64  `json:"rate_window_seconds,omitempty"`
	// Error says why the device could not be read (the spool on tmpfs, no
	// sysfs); the figures are then unknown.
	Error string `json:"error,omitempty"`
}

// SetStorageProbe sets the function that reports the spool's block device
// in snapshots. It is called outside the registry lock and must be cheap
// (it returns the last sample, it does not read the hardware).
func (r *Registry) SetStorageProbe(f func() StorageDevice) {
	r.mu.Lock()
	r.storage = f
	r.mu.Unlock()
}
