package health

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
)

// IsTLSFailure says whether err is a failure in the TLS handshake or in
// verifying the peer's certificate (including a clock outside the
// certificate's validity), as opposed to a refused connection or a
// timeout. Components count these under CounterTLSErrors: the FAULT LED
// shows them as code 4, because someone must fix a certificate, a CA file
// or the clock rather than wait for the peer to come back.
func IsTLSFailure(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		alert    tls.AlertError
		record   tls.RecordHeaderError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	if errors.As(err, &verify) || errors.As(err, &alert) || errors.As(err, &record) ||
		errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) {
		return true
	}
	// An alert from the peer (it refused our certificate, or we sent none)
	// reaches a client as a *net.OpError "remote error" around an
	// unexported alert type.
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}
