package webservice

import (
	"context"
	"errors"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/webservice/refserver"
)

// TestPostExceptionWithRejectCodeIsPermanent: an EXCEPTION to a post whose
// ERRORCODE is in reject_errorcodes refuses the message itself, so the
// error wraps flow.ErrPermanent and the destination's on_reject applies;
// any other EXCEPTION, and any to a ping (never about a message), stays a
// failure to retry.
func TestPostExceptionWithRejectCodeIsPermanent(t *testing.T) {
	for _, c := range []struct {
		name      string
		every     int      // the reference server's injected EXCEPTION (9999): 1 the ping, 2 the post
		codes     []string // reject_errorcodes; nil the default
		permanent bool
	}{
		{"post, code listed", 2, []string{"9999"}, true},
		{"post, code not listed (default)", 2, nil, false},
		{"ping, code listed", 1, []string{"9999"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, func(rc *refserver.Config) { rc.Faults.ExceptionEvery = c.every }, func(dc *DestinationConfig) {
				if c.codes != nil {
					dc.RejectErrorCodes = c.codes
				}
			})
			err := r.dest.Deliver(context.Background(), testMessage(1))
			if err == nil {
				t.Fatal("Deliver succeeded, want the injected EXCEPTION")
			}
			if got := errors.Is(err, flow.ErrPermanent); got != c.permanent {
				t.Errorf("Deliver = %v: permanent %v, want %v", err, got, c.permanent)
			}
		})
	}
	var dc DestinationConfig
	dc.SetDefaults()
	if len(dc.RejectErrorCodes) != 3 {
		t.Errorf("default reject_errorcodes %v, want the reference service's 4, 5, 6", dc.RejectErrorCodes)
	}
}
