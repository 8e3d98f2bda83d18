package appliance

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
)

// logRing keeps the last lines of the log for the `tail-log` command. It
// holds only what the logs hold, and the logs hold no patient data: control
// IDs and GUIDs, never message content. Each line has a sequence number, so
// that a follower (hl7edge logs --follow) asks only for what is new.
type logRing struct {
	mu    sync.Mutex
	lines []logLine
	next  int
	full  bool
	seq   uint64 // of the latest line
}

type logLine struct {
	seq   uint64
	level slog.Level
	text  string
}

func newLogRing(n int) *logRing { return &logRing{lines: make([]logLine, n)} }

func (r *logRing) add(level slog.Level, line string) {
	r.mu.Lock()
	r.seq++
	r.lines[r.next] = logLine{seq: r.seq, level: level, text: line}
	r.next = (r.next + 1) % len(r.lines)
	if r.next == 0 {
		r.full = true
	}
	r.mu.Unlock()
}

// since returns up to n of the most recent lines after sequence number
// after that keep accepts (nil: all), oldest first, and the sequence number
// of the latest line, for the next call.
func (r *logRing) since(after uint64, n int, keep func(logLine) bool) ([]string, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []logLine
	if r.full {
		all = append(all, r.lines[r.next:]...)
	}
	all = append(all, r.lines[:r.next]...)
	out := []string{}
	for _, l := range all {
		if l.seq > after && (keep == nil || keep(l)) {
			out = append(out, l.text)
		}
	}
	if n > 0 && len(out) > n {
		out = out[len(out)-n:]
	}
	return out, r.seq
}

// logFilter keeps the lines at or above level that name component (as
// their component, destination or source) when it is not empty.
func logFilter(level slog.Level, component string) func(logLine) bool {
	return func(l logLine) bool {
		if l.level < level {
			return false
		}
		if component == "" {
			return true
		}
		padded := " " + l.text + " "
		for _, key := range []string{" component=", " destination=", " source="} {
			if strings.Contains(padded, key+component+" ") || strings.Contains(padded, key+strconv.Quote(component)+" ") {
				return true
			}
		}
		return false
	}
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
		t.ring.add(r.Level, string(bytes.TrimRight(t.buf.b.Bytes(), "\n")))
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
