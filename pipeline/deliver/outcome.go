package deliver

import (
	"context"
	"errors"
	"regexp"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

// AttemptRecorder is what a queue may offer to keep each failed attempt in
// the message's trace (storage.Spool.Attempt).
type AttemptRecorder interface {
	Attempt(dest, guid string, lane int, outcome string)
}

var (
	ackCode    = regexp.MustCompile(`answered (AE|AR|CE|CR)\b`)
	httpStatus = regexp.MustCompile(`HTTP status (\d{3})`)
	exception  = regexp.MustCompile(`EXCEPTION ([A-Za-z0-9_.-]{1,32})`)
)

// outcome is what a trace keeps of a failed attempt: a code (AE, AR, HTTP
// 503, EXCEPTION x, timeout, rejected, error), never the error's text,
// which may quote the receiver and through it the message.
func outcome(err error) string {
	msg := err.Error()
	if m := ackCode.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	if m := httpStatus.FindStringSubmatch(msg); m != nil {
		return "HTTP " + m[1]
	}
	if m := exception.FindStringSubmatch(msg); m != nil {
		return "EXCEPTION " + m[1]
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, flow.ErrPermanent):
		return "rejected"
	}
	return "error"
}

// recordAttempt keeps a failed attempt in the message's trace, when the
// queue keeps traces.
func (w *Worker) recordAttempt(m *flow.Message, l *lane, err error) {
	if r, ok := w.q.(AttemptRecorder); ok {
		r.Attempt(w.name, m.GUID, l.idx, outcome(err))
	}
}
