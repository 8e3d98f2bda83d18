package deliver

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

// A trace keeps a code for a failed attempt, never the receiver's text,
// which may quote the message.
func TestOutcomeKeepsOnlyACode(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{errors.New("send to 10.0.0.5:2575: receiver error: it answered AE (error, retry later); its reason is in the receiver's log"), "AE"},
		{fmt.Errorf("x: it answered AR (rejected; resending it unchanged will not help): %w", flow.ErrPermanent), "AR"},
		{errors.New("post to ehr.example: transport failure: HTTP status 503, want 200: DOE^JOHN"), "HTTP 503"},
		{errors.New("post to ehr.example: web service EXCEPTION E42 DOE^JOHN not found"), "EXCEPTION E42"},
		{fmt.Errorf("waiting for the ACK: %w", context.DeadlineExceeded), "timeout"},
		{fmt.Errorf("cannot read it: %w", flow.ErrPermanent), "rejected"},
		{errors.New("PID|1||DOE^JOHN"), "error"},
	} {
		if got := outcome(c.err); got != c.want {
			t.Errorf("outcome(%q) = %q, want %q", c.err, got, c.want)
		}
	}
}
