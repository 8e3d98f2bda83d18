// Package backoff is the wait after a failure shared by every retrying loop
// (docs/protocol.md, "Back-off and ordering"): the ceiling starts at Min and
// doubles per consecutive failure up to Max, and each wait is drawn uniformly
// from [0, ceiling) ("full jitter"), so a fleet that failed together does not
// retry together. A success resets it.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// DefaultMax is the ceiling when none is configured.
const DefaultMax = 5 * time.Minute

// Backoff belongs to one loop and is not safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	// Rand returns a float in [0, 1); nil means math/rand/v2. Tests set it
	// to make waits predictable.
	Rand     func() float64
	failures int
}

// New returns a back-off from 1 s to max (DefaultMax when max is not positive).
func New(max time.Duration) *Backoff {
	if max <= 0 {
		max = DefaultMax
	}
	return &Backoff{Min: time.Second, Max: max}
}

// Ceiling is the longest the next wait can be.
func (b *Backoff) Ceiling() time.Duration {
	c := b.Min
	for i := 0; i < b.failures && c < b.Max; i++ {
		c *= 2
	}
	return min(c, b.Max)
}

// Next records a failure and returns how long to wait before retrying.
func (b *Backoff) Next() time.Duration {
	c := b.Ceiling()
	b.failures++
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	return time.Duration(r() * float64(c))
}

// Reset records a success: the next failure waits at most Min again.
func (b *Backoff) Reset() { b.failures = 0 }

// Failures is the number of failures since the last success.
func (b *Backoff) Failures() int { return b.failures }

// Wait records a failure and sleeps for the next wait, or until ctx ends
// (returning its error).
func (b *Backoff) Wait(ctx context.Context) error {
	return Sleep(ctx, b.Next())
}

// Sleep waits for d or until ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
