package firmware

import (
	"strconv"
	"strings"
)

// compareVersions orders two firmware versions the way semantic versioning
// does, a little more leniently: an optional leading "v", one or more
// dot-separated numbers (missing ones count as 0, so 2.0 is 2.0.0), then
// an optional "-pre.release" that sorts below the release itself, and an
// optional "+build" that is ignored. It returns -1, 0 or 1 as a is lower,
// equal or higher; ok is false when either is not such a version (a
// development build called "dev", a nightly name): those cannot be
// ordered, and Update treats an image it cannot order as a downgrade.
func compareVersions(a, b string) (int, bool) {
	va, okA := parseVersion(a)
	vb, okB := parseVersion(b)
	if !okA || !okB {
		return 0, false
	}
	for i := range max(len(va.nums), len(vb.nums)) {
		if c := cmpInt(at(va.nums, i), at(vb.nums, i)); c != 0 {
			return c, true
		}
	}
	return comparePre(va.pre, vb.pre), true
}

type version struct {
	nums []int
	pre  []string // nil: a release
}

func parseVersion(s string) (version, bool) {
	s = strings.TrimPrefix(s, "v")
	s, _, _ = strings.Cut(s, "+")
	core, pre, hasPre := strings.Cut(s, "-")
	var v version
	for _, p := range strings.Split(core, ".") {
		n, err := strconv.Atoi(p)
		if err != nil || strings.Trim(p, "0123456789") != "" {
			return v, false
		}
		v.nums = append(v.nums, n)
	}
	if hasPre {
		if pre == "" {
			return v, false
		}
		v.pre = strings.Split(pre, ".")
	}
	return v, true
}

func at(nums []int, i int) int {
	if i < len(nums) {
		return nums[i]
	}
	return 0
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// comparePre orders pre-release tags as semantic versioning does: none is
// highest; numeric identifiers compare as numbers and below words; a
// shorter list that is a prefix of a longer one is lower.
func comparePre(a, b []string) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	for i := range min(len(a), len(b)) {
		na, errA := strconv.Atoi(a[i])
		nb, errB := strconv.Atoi(b[i])
		switch {
		case errA == nil && errB == nil:
			if c := cmpInt(na, nb); c != 0 {
				return c
			}
		case errA == nil:
			return -1
		case errB == nil:
			return 1
		default:
			if c := strings.Compare(a[i], b[i]); c != 0 {
				return c
			}
		}
	}
	return cmpInt(len(a), len(b))
}
