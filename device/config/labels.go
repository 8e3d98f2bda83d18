package config

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
)

// MaxLabels bounds device.labels: they ride in every status and health
// message, and a fleet selects by a few of them, not by an inventory.
const MaxLabels = 16

// Labels' keys and values share one alphabet, without the ',' and '=' of
// a selector (site=north,ring=canary), so that every label can be selected.
var (
	labelKey   = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)
	labelValue = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}$`)
)

// checkLabels names every label a fleet selector could not match.
func checkLabels(labels map[string]string) []error {
	var errs []error
	if len(labels) > MaxLabels {
		errs = append(errs, fmt.Errorf("device.labels: %d labels; use at most %d", len(labels), MaxLabels))
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		v := labels[k]
		switch {
		case k == "id":
			errs = append(errs, fmt.Errorf(`device.labels: key "id" is reserved (--select id=... selects by device.id); use another key`))
		case !labelKey.MatchString(k):
			errs = append(errs, fmt.Errorf("device.labels: key %q: use 1-63 lower-case letters, digits, '.', '-' or '_', a letter or digit first", k))
		case !labelValue.MatchString(v):
			errs = append(errs, fmt.Errorf("device.labels.%s: value %q: use 1-63 letters, digits, '.', ':', '/', '-' or '_', a letter or digit first", k, v))
		}
	}
	return errs
}
