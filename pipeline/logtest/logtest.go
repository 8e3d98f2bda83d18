// Package logtest is a log sink for tests that assert what was logged, or,
// more often, what was not: no password, no patient data. Components log from
// their own goroutines, so the sink is safe for concurrent use.
package logtest

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer collects everything written to it. The zero value is ready to use;
// pass it to slog.NewTextHandler or slog.NewJSONHandler.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Bytes returns a copy of what has been written so far.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

func (b *Buffer) String() string { return string(b.Bytes()) }

// Contains reports whether s has been written (possibly across writes).
func (b *Buffer) Contains(s string) bool { return strings.Contains(b.String(), s) }
