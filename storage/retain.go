package storage

import (
	"slices"
	"time"
)

// Retention (docs/operations.md, "Where did message X go"): a fully delivered
// segment is kept, for replay, until its newest message is older than
// spool.retain, or retained segments together pass spool.retain_max_bytes,
// or space is needed. Retained segments do not count against max_bytes:
// when the spool passes its low-water mark (90% of max_bytes, or the disk
// below min_free_disk plus a tenth of max_bytes) they go first, oldest
// first, so that no message still owed is refused while any remain. Dead
// letters and undeliverable messages live outside segments and are never
// dropped by retention.

// retainedLocked says whether segment seg is held only for replay: closed
// and owing nothing. s.mu is held.
func (s *Spool) retainedLocked(seg uint64, si *segInfo) bool {
	return si.pending <= 0 && seg < s.curSeg
}

// segsToDrop picks the delivered segments to drop now, oldest first.
func (s *Spool) segsToDrop() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cands []uint64
	var retained int64
	for seg, si := range s.segs {
		if s.retainedLocked(seg, si) {
			cands = append(cands, seg)
			retained += si.bytes
		}
	}
	slices.Sort(cands)
	keep := s.cfg.retainFor()
	cutoff := s.now().Add(-keep).UnixNano()
	used := s.usedBytesLocked()
	var drop []uint64
	for _, seg := range cands {
		si := s.segs[seg]
		if keep > 0 && si.last >= cutoff && !s.overRetainLocked(used, retained) {
			break
		}
		drop = append(drop, seg)
		retained -= si.bytes
	}
	return drop
}

// overRetainLocked says whether retained segments must make way: they pass
// their own bound, or the spool its low-water mark.
func (s *Spool) overRetainLocked(used, retained int64) bool {
	if retained <= 0 {
		return false
	}
	maxB := int64(s.cfg.MaxBytes)
	low := maxB - maxB/10
	diskShort := s.freeDisk > 0 && s.freeDisk < int64(s.cfg.MinFreeDisk)+maxB/10
	return retained > int64(s.cfg.RetainMaxBytes) || used+retained > low || diskShort
}

// retainPressure says whether clean-up should run now to make room.
func (s *Spool) retainPressure() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, _, _ := s.retainedFiguresLocked()
	return r > 0 && s.overRetainLocked(s.usedBytesLocked(), r)
}

// retainedFiguresLocked is what retention holds: bytes, messages and the oldest
// receive time (zero when nothing).
func (s *Spool) retainedFiguresLocked() (bytes, count int64, oldest time.Time) {
	var first int64
	for seg, si := range s.segs {
		if !s.retainedLocked(seg, si) {
			continue
		}
		bytes += si.bytes
		count += int64(si.count)
		if si.first > 0 && (first == 0 || si.first < first) {
			first = si.first
		}
	}
	if first > 0 {
		oldest = time.Unix(0, first)
	}
	return bytes, count, oldest
}
