// Package ratelog keeps a flood (ten thousand refused connections or
// commands) from flooding the log and pushing everything else out of the
// tail an operator reads. It wraps a slog.Handler: each kind of line (its
// level and message) may be written burst times per interval; the rest are
// counted, and the next line of that kind that is written carries the count
// as "suppressed". Lines of other kinds are untouched.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// maxKinds bounds the table of kinds. Messages are constant strings in
// this code base, so it is never reached; if it were, the table starts over
// rather than grow.
const maxKinds = 1024

// Handler is a rate-limiting slog.Handler. Handlers derived with WithAttrs
// and WithGroup share their parent's budget, so per-connection loggers
// (log.With("peer", …)) are limited together.
type Handler struct {
	next slog.Handler
	st   *state
}

type state struct {
	every time.Duration
	burst int
	now   func() time.Time

	mu    sync.Mutex
	kinds map[kind]*bucket
}

type kind struct {
	level slog.Level
	msg   string
}

type bucket struct {
	start      time.Time
	written    int
	suppressed int
}

// New wraps next: at most burst lines of each kind per every.
func New(next slog.Handler, every time.Duration, burst int) *Handler {
	if burst < 1 {
		burst = 1
	}
	return &Handler{next: next, st: &state{every: every, burst: burst, now: time.Now, kinds: map[kind]*bucket{}}}
}

// Logger returns log with its handler wrapped by New.
func Logger(log *slog.Logger, every time.Duration, burst int) *slog.Logger {
	return slog.New(New(log.Handler(), every, burst))
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle writes r unless its kind has used up its budget for this interval.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	held, ok := h.st.admit(kind{r.Level, r.Message})
	if !ok {
		return nil
	}
	if held > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", held))
	}
	return h.next.Handle(ctx, r)
}

// admit says whether a line of kind k may be written now, and how many of
// its kind were held back since the last one written.
func (s *state) admit(k kind) (held int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	b := s.kinds[k]
	if b == nil {
		if len(s.kinds) >= maxKinds {
			clear(s.kinds)
		}
		b = &bucket{start: now}
		s.kinds[k] = b
	}
	if now.Sub(b.start) >= s.every {
		b.start, b.written = now, 0
	}
	if b.written >= s.burst {
		b.suppressed++
		return 0, false
	}
	b.written++
	held, b.suppressed = b.suppressed, 0
	return held, true
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(as), st: h.st}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(g string) slog.Handler {
	return &Handler{next: h.next.WithGroup(g), st: h.st}
}
