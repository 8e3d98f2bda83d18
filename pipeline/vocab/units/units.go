// Package units gives configuration files human units: sizes such as 1MiB and
// durations in Go syntax such as 30s.
package units

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Size is a number of bytes written in YAML as 512, 64KiB, 1MiB, 2GiB: IEC
// units, powers of 1024, which the documentation uses; K, M and G alone
// mean the same. SI units (KB, MB, GB, TB) are accepted and mean powers of
// 1000: 64MB is 64,000,000 bytes (`hl7edge config check` says so).
type Size int64

var sizeSuffixes = []struct {
	suffix string
	mult   int64
}{
	{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"TIB", 1 << 40},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
}

// ParseSize reads a size with an optional unit.
func ParseSize(s string) (Size, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range sizeSuffixes {
		if strings.HasSuffix(t, u.suffix) {
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			mult = u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number with an optional unit such as 512KiB, 1MiB or 2GiB", s)
	}
	v := n * float64(mult)
	if v > 1<<62 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(v), nil
}

// UnmarshalYAML accepts a plain integer (bytes) or a string with a unit.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return lineError(n, err.Error())
	}
	*s = v
	return nil
}

// MarshalYAML writes the size back in the largest exact binary unit.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// String writes the size in the largest binary unit that divides it exactly,
// so that it reads back to the same value.
func (s Size) String() string {
	v := int64(s)
	for _, u := range []struct {
		name string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v >= u.mult && v%u.mult == 0 {
			return fmt.Sprintf("%d%s", v/u.mult, u.name)
		}
	}
	return strconv.FormatInt(v, 10)
}

// Human writes the size rounded to one decimal in the largest binary unit
// that fits, for people rather than configuration files.
func (s Size) Human() string {
	v := float64(s)
	for _, u := range []struct {
		name string
		mult float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v >= u.mult {
			return strconv.FormatFloat(v/u.mult, 'f', 1, 64) + " " + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + " B"
}

// Duration is a time.Duration written in YAML in Go syntax (300ms, 30s, 5m, 1h30m).
type Duration time.Duration

// UnmarshalYAML reads Go duration syntax.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil || v < 0 {
		return lineError(n, fmt.Sprintf("duration %q: want Go syntax such as 300ms, 30s, 5m or 1h", n.Value))
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes Go duration syntax.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// lineError is a value's mistake with its line, as a *yaml.TypeError: the
// decoder then carries on with the rest of the file, so one check names
// every mistake rather than stopping at the first bad unit.
func lineError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}
