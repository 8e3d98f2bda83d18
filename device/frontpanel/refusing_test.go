package frontpanel

import (
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// TestRefusingAdviceFitsTheDestination: FAULT 2's advice names what the
// destination has. A destination held by a refused message is its own
// reason, with the command that moves the message aside; an MLLP receiver
// answering AE is told to read its log, not to check a logon it does not
// have; only a web service is told about logon_id (issue 28, point 3).
func TestRefusingAdviceFitsTheDestination(t *testing.T) {
	for _, c := range []struct {
		name      string
		s         health.Snapshot
		what      string
		want, not []string
	}{
		{"held", with(func(s *health.Snapshot) { s.Destinations[1].State = health.Held }),
			"held by a refused message: destination lis", []string{"spool skip"}, []string{"logon_id"}},
		{"MLLP receiver refusing", with(func(s *health.Snapshot) {
			s.Destinations[1].State = health.Down
			s.Destinations[1].Counters = map[string]uint64{health.CounterRefused: 2}
		}), "upstream refusing: destination lis", []string{"its own log"}, []string{"logon_id", "password_file"}},
		{"web service refusing", with(func(s *health.Snapshot) {
			s.Destinations[0].State = health.Down
			s.Destinations[0].Counters = map[string]uint64{health.CounterExceptions: 2}
		}), "upstream refusing: destination ehr", []string{"logon_id and password_file"}, nil},
	} {
		f := ExplainFault(c.s)
		if f.Code != int(FaultUpstreamRefusing) || f.What != c.what {
			t.Errorf("%s: fault %+v, want code 2, %q", c.name, f, c.what)
		}
		for _, w := range c.want {
			if !strings.Contains(f.Advice, w) {
				t.Errorf("%s: advice %q lacks %q", c.name, f.Advice, w)
			}
		}
		for _, n := range c.not {
			if strings.Contains(f.Advice, n) {
				t.Errorf("%s: advice %q names %q, which this destination does not have", c.name, f.Advice, n)
			}
		}
	}
}
