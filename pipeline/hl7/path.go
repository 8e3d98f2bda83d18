package hl7

import (
	"fmt"
	"strconv"
	"strings"
)

// Path addresses a value: a segment, a field and optionally a component and
// a subcomponent, always in the first repetition. Component and Subcomponent
// are 0 when the path stops before them (the whole field or component).
type Path struct {
	Segment      string // e.g. PID
	Field        int    // 1-based; MSH-1 is the field separator itself
	Component    int    // 1-based, 0 = whole field
	Subcomponent int    // 1-based, 0 = whole component
}

// maxIndex bounds each number in a path; no HL7 segment comes near it, and
// it keeps a typo like PID-30000000000 from meaning anything.
const maxIndex = 999

// ParsePath reads SEG-field[.component[.subcomponent]], such as MSH-9.1,
// PID-3, PID-5.1.2 or ZPI-2. The segment ID is case-insensitive.
func ParsePath(s string) (Path, error) {
	bad := func(why string) (Path, error) {
		shown := s
		if len(shown) > 40 {
			shown = shown[:40] + "..."
		}
		return Path{}, fmt.Errorf("field path %q: %s; write SEG-field[.component[.subcomponent]], for example PID-3.1 or MSH-9", shown, why)
	}
	seg, nums, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return bad("no '-' between segment and field")
	}
	seg = strings.ToUpper(seg)
	if segmentID(seg) == "" || len(seg) != 3 {
		return bad("segment must be 3 letters or digits starting with a letter")
	}
	parts := strings.Split(nums, ".")
	if len(parts) > 3 {
		return bad("too many parts after the field number (at most component and subcomponent)")
	}
	var n [3]int
	names := [3]string{"field", "component", "subcomponent"}
	for i, part := range parts {
		v, err := strconv.Atoi(part)
		if err != nil || v < 1 || v > maxIndex || part[0] == '+' {
			return bad(fmt.Sprintf("%s must be a number from 1 to %d", names[i], maxIndex))
		}
		n[i] = v
	}
	return Path{Segment: seg, Field: n[0], Component: n[1], Subcomponent: n[2]}, nil
}

// String writes the path back in the form ParsePath reads.
func (p Path) String() string {
	s := p.Segment + "-" + strconv.Itoa(p.Field)
	if p.Component > 0 {
		s += "." + strconv.Itoa(p.Component)
		if p.Subcomponent > 0 {
			s += "." + strconv.Itoa(p.Subcomponent)
		}
	}
	return s
}
