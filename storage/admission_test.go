package storage

import (
	"errors"
	"strings"
	"testing"
)

func TestAdmit(t *testing.T) {
	const mib = 1 << 20
	q := quota{maxBytes: 100 * mib, minFreeDisk: 64 * mib, usedBefore: 0, free: 1 << 30}
	for _, tc := range []struct {
		name    string
		q       quota
		used    int64
		size    int64
		requeue bool
		want    verdict
	}{
		{"empty spool", q, 0, mib, false, admitted},
		{"fills the quota exactly", q, 99 * mib, mib, false, admitted},
		{"one byte over the quota", q, 99 * mib, mib + 1, false, overQuota},
		{"already over the quota", q, 101 * mib, 1, false, overQuota},
		{"re-queued dead letter over the quota", q, 101 * mib, mib, true, admitted},
		{"re-queued dead letter on a full disk", quota{maxBytes: q.maxBytes, minFreeDisk: q.minFreeDisk, free: 65 * mib}, 0, 2 * mib, true, admitted},
		{"disk keeps min_free_disk exactly", quota{maxBytes: q.maxBytes, minFreeDisk: 64 * mib, free: 65 * mib}, 0, mib, false, admitted},
		{"disk would fall below min_free_disk", quota{maxBytes: q.maxBytes, minFreeDisk: 64 * mib, free: 65 * mib}, 0, mib + 1, false, diskLow},
		{"free space unknown skips the disk check", quota{maxBytes: q.maxBytes, minFreeDisk: 64 * mib, free: 0}, 0, mib, false, admitted},
		{"quota is checked before the disk", quota{maxBytes: mib, minFreeDisk: 64 * mib, free: 65 * mib}, mib, 2 * mib, false, overQuota},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.q.admit(tc.used, tc.size, tc.requeue); got != tc.want {
				t.Fatalf("admit(used %d, size %d, requeue %v) = %v, want %v", tc.used, tc.size, tc.requeue, got, tc.want)
			}
		})
	}
}

func TestRefusalNamesTheLimit(t *testing.T) {
	q := quota{maxBytes: 1000, minFreeDisk: 500, free: 600}
	for _, tc := range []struct {
		v    verdict
		want []string
	}{
		{overQuota, []string{"990 of 1000 bytes", "spool.max_bytes", "retry later"}},
		{diskLow, []string{"only 600 bytes free", "spool.min_free_disk is 500", "free disk space"}},
	} {
		err := q.refusal(tc.v, 990)
		if !errors.Is(err, ErrFull) {
			t.Fatalf("verdict %v: %v is not ErrFull", tc.v, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("verdict %v: %q does not say %q", tc.v, err, w)
			}
		}
	}
	if err := q.refusal(admitted, 0); err != nil {
		t.Fatalf("admitted has a refusal: %v", err)
	}
}

func TestHeadroom(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name string
		q    quota
		used int64
		want bool
	}{
		{"empty", quota{maxBytes: 100 * mib, minFreeDisk: 64 * mib, free: 1 << 30}, 0, true},
		{"at 90% of max_bytes", quota{maxBytes: 100 * mib, minFreeDisk: 64 * mib, free: 1 << 30}, 90 * mib, true},
		{"just over 90% of max_bytes", quota{maxBytes: 100 * mib, minFreeDisk: 64 * mib, free: 1 << 30}, 90*mib + 1, false},
		{"disk at min_free_disk plus a tenth", quota{maxBytes: 100 * mib, minFreeDisk: 64 * mib, free: 74 * mib}, 0, true},
		{"disk just under min_free_disk plus a tenth", quota{maxBytes: 100 * mib, minFreeDisk: 64 * mib, free: 74*mib - 1}, 0, false},
		{"the group's own writes come off the free space", quota{maxBytes: 100 * mib, minFreeDisk: 64 * mib, usedBefore: 10 * mib, free: 80 * mib}, 17 * mib, false},
		{"writes before the group do not", quota{maxBytes: 100 * mib, minFreeDisk: 64 * mib, usedBefore: 10 * mib, free: 80 * mib}, 16 * mib, true},
		{"free space unknown", quota{maxBytes: 100 * mib, minFreeDisk: 64 * mib, free: 0}, 50 * mib, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.q.headroom(tc.used); got != tc.want {
				t.Fatalf("headroom(%d) = %v, want %v", tc.used, got, tc.want)
			}
		})
	}
}
