package conformance

import (
	"context"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/webservice/internal/wstest"
)

// TestCauseNamesTheFlag: when the check stops before testing the protocol
// (the service's certificate is not trusted, the logon is refused), the
// report's cause says so and names the flag to fix instead of calling the
// service non-conforming; a service that conforms has no cause (issue 28,
// point 10).
func TestCauseNamesTheFlag(t *testing.T) {
	pki := wstest.NewPKI(t)
	ref, _ := refServer(t, pki, nil)
	srv := wstest.StartTLS(t, pki, ref, nil)

	noCA := config(pki, srv.URL)
	noCA.CAFile = ""
	if r := Check(context.Background(), noCA); !strings.Contains(r.Cause, "--ca") {
		t.Errorf("without the service's CA: cause %q, want one naming --ca\n%s", r.Cause, r)
	}
	wrong := config(pki, srv.URL)
	wrong.Password = "wrong"
	if r := Check(context.Background(), wrong); !strings.Contains(r.Cause, "--password-file") {
		t.Errorf("with a wrong password: cause %q, want one naming --password-file\n%s", r.Cause, r)
	}
	if r := Check(context.Background(), config(pki, srv.URL)); r.Cause != "" {
		t.Errorf("a conforming service: cause %q, want none", r.Cause)
	}
}
