package fleetview

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Selector picks rows by labels and id: site=north,ring=canary. Terms with
// different keys must all hold; a key given more than once holds for any
// of its values (id=gw1,id=gw2 selects both). The empty selector picks
// every row.
type Selector map[string][]string

// ParseSelector reads --select's text.
func ParseSelector(s string) (Selector, error) {
	sel := Selector{}
	if strings.TrimSpace(s) == "" {
		return sel, nil
	}
	for term := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(term), "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("--select %q: term %q is not key=value; write site=north,ring=canary or id=gw1,id=gw2", s, term)
		}
		sel[k] = append(sel[k], v)
	}
	return sel, nil
}

// Match says whether r is selected.
func (s Selector) Match(r Row) bool {
	for k, vals := range s {
		have, ok := r.Labels[k]
		if k == "id" {
			have, ok = r.ID, true
		}
		if !ok || !slices.Contains(vals, have) {
			return false
		}
	}
	return true
}

// Filter keeps the rows s selects, in their order.
func (s Selector) Filter(rows []Row) []Row {
	var out []Row
	for _, r := range rows {
		if s.Match(r) {
			out = append(out, r)
		}
	}
	return out
}

// labelText is the LABELS cell: key=value pairs sorted by key.
func labelText(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}
