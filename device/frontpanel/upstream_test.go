package frontpanel

import (
	"testing"

	"github.com/hl7edge/hl7edge/board/led"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// The LINK LED follows the destinations whose type registered itself as
// upstream, whatever the type is called: a new upstream type needs no
// change here, and a destination of any other type never dims LINK.
func TestLinkFollowsTheUpstreamFlagNotATypeName(t *testing.T) {
	up := Inputs{Ready: true, MQTTUp: true}
	fhirDown := with(func(s *health.Snapshot) {
		s.Destinations = append(s.Destinations, health.ComponentSnapshot{Name: "fhir", Type: "fhir", Upstream: true, State: health.Down})
	})
	if got := Patterns(fhirDown, up)[led.LINK]; got.Kind == On {
		t.Errorf("an upstream destination of another type is down and LINK is %v", got)
	}
	notUpstream := with(func(s *health.Snapshot) {
		s.Destinations = append(s.Destinations, health.ComponentSnapshot{Name: "archive", Type: "webservice", State: health.Down})
	})
	if got := Patterns(notUpstream, up)[led.LINK]; got.Kind != On {
		t.Errorf("a destination not marked upstream is down and LINK is %v", got)
	}
}
