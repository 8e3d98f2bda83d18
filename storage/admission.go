package storage

import "fmt"

// quota is what admission weighs one group commit against: the limits, and
// the bytes in use and free on the file system as read before the group.
type quota struct {
	maxBytes    int64 // spool.max_bytes
	minFreeDisk int64 // spool.min_free_disk
	usedBefore  int64
	free        int64 // 0: unknown (statfs failed); the disk check is then skipped
}

// verdict is admission's answer for one message.
type verdict int

const (
	admitted  verdict = iota
	overQuota         // spool.max_bytes would be exceeded
	diskLow           // the file system would fall below spool.min_free_disk
)

// admit decides whether a message of size bytes may be stored while used
// bytes are in use. A dead letter being re-queued is always admitted: it
// already counts against the quota and leaves the dead-letter store in the
// same commit. The disk check uses the free space read before the group, so
// every message of a group is judged against the same figure.
func (q quota) admit(used, size int64, requeue bool) verdict {
	switch {
	case requeue:
		return admitted
	case used+size > q.maxBytes:
		return overQuota
	case q.free > 0 && q.free-size < q.minFreeDisk:
		return diskLow
	}
	return admitted
}

// refusal is the error a sender is given for a verdict other than admitted:
// it names the limit and what to do.
func (q quota) refusal(v verdict, used int64) error {
	switch v {
	case overQuota:
		return fmt.Errorf("%w: %d of %d bytes (spool.max_bytes) in use; the sender should retry later, and an operator should check why destinations are not draining", ErrFull, used, q.maxBytes)
	case diskLow:
		return fmt.Errorf("%w: only %d bytes free on the spool's file system (spool.min_free_disk is %d); free disk space", ErrFull, q.free, q.minFreeDisk)
	}
	return nil
}

// headroom says whether, with used bytes in use, the spool is below its
// low-water mark: at most 90% of max_bytes in use and min_free_disk plus a
// tenth of max_bytes free. The free figure was read before the group, so the
// group's own writes come off it.
func (q quota) headroom(used int64) bool {
	margin := q.maxBytes / 10
	diskFree := q.free - (used - q.usedBefore)
	return used <= q.maxBytes-margin && (q.free <= 0 || diskFree >= q.minFreeDisk+margin)
}
