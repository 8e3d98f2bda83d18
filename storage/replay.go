package storage

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/google/uuid"
)

// MaxReplay bounds one replay: a longer range is refused, to be split.
const MaxReplay = 100_000

// ErrNotRetained: part of a replay's range is no longer retained.
var ErrNotRetained = errors.New("range not fully retained")

// ReplayRequest re-queues retained messages to a destination.
type ReplayRequest struct {
	To      string    `json:"to"`
	Since   time.Time `json:"since"`
	Until   time.Time `json:"until,omitzero"`
	Source  string    `json:"source,omitempty"`
	Type    string    `json:"type,omitempty"`
	DryRun  bool      `json:"dry_run,omitempty"`
	Partial bool      `json:"partial,omitempty"`
}

// ReplayResult is `hl7edge replay --json` (docs/mqtt-api.md, replay).
type ReplayResult struct {
	Matched         int        `json:"matched"`
	Replayed        int        `json:"replayed"`
	FirstReceivedAt *time.Time `json:"first_received_at"`
	LastReceivedAt  *time.Time `json:"last_received_at"`
	Missing         int        `json:"missing"`
	DryRun          bool       `json:"dry_run,omitempty"`
}

// replayRef is one matched message: its trace header and whether its
// retained copy is still on disk.
type replayRef struct {
	h    *traceHead
	kept bool
}

// Replay queues again, for r.To and in their original order, the messages
// received in [Since, Until) that were routed to r.To (and match Source and
// Type), each under a new GUID whose trace names the original (replay_of).
// Replays of replays are not matched. A range of which some messages are no
// longer retained is refused, unless Partial; a dry run only counts.
func (s *Spool) Replay(ctx context.Context, r ReplayRequest) (ReplayResult, error) {
	var res ReplayResult
	if err := s.checkReplay(&r); err != nil {
		return res, err
	}
	refs, err := s.replayRefs(r)
	if err != nil {
		return res, err
	}
	res.Matched, res.DryRun = len(refs), r.DryRun
	for _, ref := range refs {
		if !ref.kept {
			res.Missing++
		}
	}
	if len(refs) > 0 {
		first, last := refs[0].h.Received.UTC(), refs[len(refs)-1].h.Received.UTC()
		res.FirstReceivedAt, res.LastReceivedAt = &first, &last
	}
	if res.Missing > 0 && !r.Partial {
		return res, fmt.Errorf("%w: %d of %d messages in the range are no longer retained (spool.retain is %s, and retained messages make way when space is needed): replay a later range, or what is left with --partial",
			ErrNotRetained, res.Missing, res.Matched, s.cfg.retainFor())
	}
	if r.DryRun {
		return res, nil
	}
	res.Replayed, err = s.replayRefsTo(ctx, r.To, refs)
	return res, err
}

func (s *Spool) checkReplay(r *ReplayRequest) error {
	if !s.tracing() {
		return fmt.Errorf("%w: traces are off (spool.trace_retain is 0s), so the spool cannot tell which messages were received when", ErrBadQuery)
	}
	if !slices.Contains(s.dests, r.To) {
		return fmt.Errorf("%w: destination %q is not configured; name one of %v", ErrBadQuery, r.To, s.dests)
	}
	if r.Since.IsZero() {
		return fmt.Errorf("%w: a start time (since) is required", ErrBadQuery)
	}
	if r.Until.IsZero() {
		r.Until = s.now()
	}
	if !r.Until.After(r.Since) {
		return fmt.Errorf("%w: until %s is not after since %s", ErrBadQuery, r.Until.Format(time.RFC3339), r.Since.Format(time.RFC3339))
	}
	return nil
}

// replayRefs lists the matched messages in their original order.
func (s *Spool) replayRefs(r ReplayRequest) ([]replayRef, error) {
	var refs []replayRef
	q := TraceQuery{Since: r.Since, Until: r.Until}
	err := s.view(func(txn *badger.Txn) error {
		return s.eachHead(txn, q, func(h *traceHead) (bool, error) {
			if h.Received.Before(r.Since) || !h.Received.Before(r.Until) || h.ReplayOf != uuid.Nil || !slices.Contains(h.Route, r.To) ||
				r.Source != "" && h.Source != r.Source || r.Type != "" && h.Type != r.Type {
				return true, nil
			}
			if len(refs) == MaxReplay {
				return false, fmt.Errorf("%w: more than %d messages in the range: split it", ErrBadQuery, MaxReplay)
			}
			_, err := txn.Get(msgKey(h.Seg, h.Seq))
			if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
				return false, err
			}
			refs = append(refs, replayRef{h: h, kept: err == nil})
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("spool: replay: %w", err)
	}
	slices.SortStableFunc(refs, func(a, b replayRef) int {
		if c := a.h.Received.Compare(b.h.Received); c != 0 {
			return c
		}
		return cmp.Compare(a.h.Seq, b.h.Seq)
	})
	return refs, nil
}

// replayChunk is how many retained messages are read and queued at once.
const replayChunk = 256

// replayRefsTo queues the retained copies of refs for dest, chunk by chunk.
func (s *Spool) replayRefsTo(ctx context.Context, dest string, refs []replayRef) (int, error) {
	n := 0
	for len(refs) > 0 {
		chunk := refs[:min(replayChunk, len(refs))]
		refs = refs[len(chunk):]
		var es []Entry
		err := s.view(func(txn *badger.Txn) error {
			for _, ref := range chunk {
				if !ref.kept {
					continue
				}
				rec, err := readMessage(txn, ref.h.Seg, ref.h.Seq)
				if err != nil {
					continue // dropped since it was counted: the count says so
				}
				h := ref.h
				es = append(es, Entry{Source: h.Source, Raw: rec.Raw, Dests: []string{dest}, ControlID: h.ControlID, Type: h.Type, Peer: h.Peer, ReplayOf: h.GUID})
			}
			return nil
		})
		if err != nil {
			return n, fmt.Errorf("spool: replay: read retained messages: %w", err)
		}
		k, err := s.appendOrdered(ctx, es)
		n += k
		if err != nil {
			return n, fmt.Errorf("spool: replay stopped after %d messages: %w", n, err)
		}
	}
	return n, nil
}

// appendOrdered stores es in their order (the commit loop takes requests
// one at a time, so they get rising sequence numbers) and waits for all.
// It returns how many were stored before the first that was not.
func (s *Spool) appendOrdered(ctx context.Context, es []Entry) (int, error) {
	reqs := make([]*appendReq, 0, len(es))
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return 0, ErrClosed
	}
	var sendErr error
	for _, e := range es {
		r := &appendReq{e: e, done: make(chan appendRes, 1)}
		select {
		case s.reqs <- r:
			reqs = append(reqs, r)
		case <-ctx.Done():
			sendErr = ctx.Err()
		}
		if sendErr != nil {
			break
		}
	}
	s.closeMu.RUnlock()
	n := 0
	var first error
	for _, r := range reqs {
		res := <-r.done
		if res.err != nil && first == nil {
			first = res.err
		}
		if first == nil {
			n++
		}
	}
	if first == nil {
		first = sendErr
	}
	return n, first
}
