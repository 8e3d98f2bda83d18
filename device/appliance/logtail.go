package appliance

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
)

// logRing keeps the last lines of the log for the `tail-log` command. It
// holds only what the logs hold, and the logs hold no patient data: control
// IDs and GUIDs, never message content.
type logRing struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

func newLogRing(n int) *logRing { return &logRing{lines: make([]string, n)} }

func (r *logRing) add(line string) {
	r.mu.Lock()
	r.lines[r.next] = line
	r.next = (r.next + 1) % len(r.lines)
	if r.next == 0 {
		r.full = true
	}
	r.mu.Unlock()
}

// tail returns up to n most recent lines, oldest first.
func (r *logRing) tail(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []string
	if r.full {
		all = append(all, r.lines[r.next:]...)
	}
	all = append(all, r.lines[:r.next]...)
	if n > 0 && len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}

// teeHandler writes every record to the main handler and, formatted as text,
// to the ring.
type teeHandler struct {
	main slog.Handler
	ring *logRing
	text slog.Handler
	buf  *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func newTee(main slog.Handler, ring *logRing, level slog.Leveler) *teeHandler {
	lb := &lockedBuffer{}
	return &teeHandler{main: main, ring: ring, buf: lb, text: slog.NewTextHandler(&lb.b, &slog.HandlerOptions{Level: level})}
}

func (t *teeHandler) Enabled(ctx context.Context, l slog.Level) bool { return t.main.Enabled(ctx, l) }

func (t *teeHandler) Handle(ctx context.Context, r slog.Record) error {
	t.buf.mu.Lock()
	t.buf.b.Reset()
	if err := t.text.Handle(ctx, r.Clone()); err == nil {
		t.ring.add(string(bytes.TrimRight(t.buf.b.Bytes(), "\n")))
	}
	t.buf.mu.Unlock()
	return t.main.Handle(ctx, r)
}

func (t *teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &teeHandler{main: t.main.WithAttrs(as), ring: t.ring, buf: t.buf, text: t.text.WithAttrs(as)}
}

func (t *teeHandler) WithGroup(g string) slog.Handler {
	return &teeHandler{main: t.main.WithGroup(g), ring: t.ring, buf: t.buf, text: t.text.WithGroup(g)}
}
