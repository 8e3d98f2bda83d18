// Package logtest is a log sink for tests that assert what was logged, or,
// more often, what was not: no password, no patient data. Components log from
// their own goroutines, so the sink is safe for concurrent use.
//
// It is also a guard over the whole suite: a test that wants to prove a
// field's content never reaches a log puts Marker into that field, and any
// Buffer that is then written a line holding Marker panics, failing
// whichever test (and package) it happens in.
package logtest

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
)

// Marker stands for patient data in test messages. It is plain letters and
// digits, so it survives any HL7 field, and never appears in a log line or
// MQTT payload unless content leaked.
const Marker = "PTXMARKQ7"

// Leaks reports whether p holds Marker.
func Leaks(p []byte) bool { return bytes.Contains(p, []byte(Marker)) }

// Buffer collects everything written to it. The zero value is ready to use;
// pass it to slog.NewTextHandler or slog.NewJSONHandler.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p. It panics when p holds Marker: message content in a log.
func (b *Buffer) Write(p []byte) (int, error) {
	if Leaks(p) {
		panic(fmt.Sprintf("logtest: a log line carries logtest.Marker, so message content reached the log: %q", p))
	}
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
