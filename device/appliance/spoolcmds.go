package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/gateway"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
	"github.com/hl7edge/hl7edge/storage"
)

// SpoolOps is what the spool commands (spool-stats and the dead-letter
// commands) act on: the running gateway, or the spool the CLI opens itself
// while the daemon is stopped. Both answer through the same handlers, so
// `hl7edge spool` prints the same shape either way.
type SpoolOps interface {
	// Stats is the spool's figures with every source's state and counters.
	Stats() SpoolReport
	// DeadLetters lists a destination's dead letters with their first
	// segment only (identifiers, never the whole of a large report).
	DeadLetters(dest string) ([]storage.DeadLetter, error)
	RetryDead(dest string, guids ...string) (int, error)
	PurgeDead(dest string, guids ...string) (int, error)
	// Skip moves the message dest keeps failing on (offline: the first in
	// its queue) to its dead letters with reason, and returns its GUID.
	Skip(ctx context.Context, dest, reason string) (string, error)
	// The undeliverable store; retry routes by the configuration's rules.
	Undeliverable(limit int) ([]storage.DeadLetter, error)
	RetryUndeliverable(guids ...string) (storage.Rerouted, error)
	PurgeUndeliverable(guids ...string) (int, error)
	Trace(q storage.TraceQuery) (storage.TraceResult, error)
	Replay(ctx context.Context, r storage.ReplayRequest) (storage.ReplayResult, error)
}

// RegisterSpoolCommands registers spool-stats, dead-list, dead-retry,
// dead-purge (privileged: it deletes data), spool-skip (privileged: it
// takes a message out of its destination's way), the undeliverable
// commands, trace and replay (privileged: it sends messages again) on d.
func RegisterSpoolCommands(d *command.Dispatcher, ops SpoolOps) {
	with := func(f func(nameArgs) (any, string, error)) command.Handler {
		return func(_ context.Context, raw json.RawMessage) (any, string, error) {
			args, err := parseArgs(raw)
			if err != nil {
				return nil, "", err
			}
			return f(args)
		}
	}
	d.Register(command.SpoolStats, with(func(nameArgs) (any, string, error) { return ops.Stats(), "", nil }))
	d.Register(command.DeadList, with(func(args nameArgs) (any, string, error) {
		n, err := args.target()
		if err != nil {
			return nil, "", err
		}
		dls, err := ops.DeadLetters(n)
		if err != nil {
			return nil, "", err
		}
		out := deadLetterInfos(dls)
		return out, units.Count(len(out), "dead letter", "dead letters"), nil
	}))
	d.Register(command.DeadRetry, with(func(args nameArgs) (any, string, error) {
		n, err := args.target()
		if err != nil {
			return nil, "", err
		}
		k, err := ops.RetryDead(n, args.GUIDs...)
		return map[string]int{"retried": k}, units.Count(k, "dead letter", "dead letters") + " queued again", err
	}))
	d.RegisterPrivileged(command.DeadPurge, with(func(args nameArgs) (any, string, error) {
		n, err := args.target()
		if err != nil {
			return nil, "", err
		}
		k, err := ops.PurgeDead(n, args.GUIDs...)
		return map[string]int{"purged": k}, units.Count(k, "dead letter", "dead letters") + " deleted", err
	}))
	d.RegisterPrivileged(command.SpoolSkip, func(ctx context.Context, raw json.RawMessage) (any, string, error) {
		args, err := parseArgs(raw)
		if err != nil {
			return nil, "", err
		}
		n, err := args.target()
		if err != nil {
			return nil, "", err
		}
		if strings.TrimSpace(args.Reason) == "" {
			return nil, "", errors.New(`args need "reason": why the message is moved aside (kept with the dead letter; no patient data)`)
		}
		guid, err := ops.Skip(ctx, n, args.Reason)
		if err != nil {
			return nil, "", fmt.Errorf("skip on destination %s: %w", n, err)
		}
		return map[string]string{"guid": guid}, fmt.Sprintf("message %s moved to the dead letters of %s", guid, n), nil
	})
	registerUndeliverable(d, ops, with)
	registerTraceCommands(d, ops)
}

// deadLetterInfos lists dead letters as an operator sees them: identifiers
// and reasons, never content.
func deadLetterInfos(dls []storage.DeadLetter) []DeadLetterInfo {
	out := []DeadLetterInfo{}
	for _, dl := range dls {
		info := DeadLetterInfo{GUID: dl.GUID, Source: dl.Source, Received: dl.Received, Attempts: dl.Attempts, Reason: dl.Reason}
		if m, err := hl7.Parse(dl.Raw); err == nil {
			info.ControlID = m.Header().ControlID
		}
		out = append(out, info)
	}
	return out
}

// liveSpool is the running gateway as SpoolOps.
type liveSpool struct{ b *Box }

func (l liveSpool) Stats() SpoolReport {
	var st storage.Stats
	if sp := l.b.Gateway.Spool(); sp != nil {
		st = sp.Stats()
	} else if err := l.b.Gateway.SpoolError(); err != nil {
		st.Error = err.Error() // unreadable: say so, with the sources below
	}
	rep := newSpoolReport(st)
	snap := l.b.Registry.Snapshot()
	for _, s := range snap.Sources {
		rep.Sources[s.Name] = SourceStats{State: string(s.State), Counters: s.Counters, LastError: s.LastError}
	}
	for _, d := range snap.Destinations {
		if ds, ok := rep.Destinations[d.Name]; ok && d.Lanes != nil {
			ds.Lanes = d.Lanes
			rep.Destinations[d.Name] = ds
		}
	}
	return rep
}

func (l liveSpool) DeadLetters(dest string) ([]storage.DeadLetter, error) {
	return l.b.Gateway.DeadLetters(dest)
}

func (l liveSpool) RetryDead(dest string, guids ...string) (int, error) {
	return l.b.Gateway.RetryDead(dest, guids...)
}

func (l liveSpool) Skip(ctx context.Context, dest, reason string) (string, error) {
	return l.b.Gateway.Skip(ctx, dest, reason)
}

func (l liveSpool) Undeliverable(limit int) ([]storage.DeadLetter, error) {
	return l.b.Gateway.Undeliverable(limit)
}

func (l liveSpool) RetryUndeliverable(guids ...string) (storage.Rerouted, error) {
	return l.b.Gateway.RetryUndeliverable(guids...)
}

func (l liveSpool) PurgeUndeliverable(guids ...string) (int, error) {
	return l.b.Gateway.PurgeUndeliverable(guids...)
}

func (l liveSpool) PurgeDead(dest string, guids ...string) (int, error) {
	return l.b.Gateway.PurgeDead(dest, guids...)
}

// OfflineSpool is a spool opened while the daemon is stopped, as SpoolOps.
// Its sources are reported "stopped" with no counters: nothing is running.
type OfflineSpool struct {
	Spool        *storage.Spool
	Sources      []string // configured source names
	Destinations []string // configured delivering destinations (no rubbish bins)
	ConfigPath   string   // named when a destination is not configured
	// Reroute routes by the configuration's match rules (undeliverable-retry).
	Reroute gateway.Rerouter
}

// Stats implements SpoolOps.
func (o OfflineSpool) Stats() SpoolReport {
	rep := newSpoolReport(o.Spool.Stats())
	for _, s := range o.Sources {
		rep.Sources[s] = SourceStats{State: string(health.Stopped)}
	}
	return rep
}

func (o OfflineSpool) known(dest string) error {
	if !slices.Contains(o.Destinations, dest) {
		return fmt.Errorf("destination %q is not in %s; name one of %v", dest, o.ConfigPath, o.Destinations)
	}
	return nil
}

// DeadLetters implements SpoolOps.
func (o OfflineSpool) DeadLetters(dest string) ([]storage.DeadLetter, error) {
	if err := o.known(dest); err != nil {
		return nil, err
	}
	return o.Spool.DeadLetterHeads(dest)
}

// RetryDead implements SpoolOps.
func (o OfflineSpool) RetryDead(dest string, guids ...string) (int, error) {
	if err := o.known(dest); err != nil {
		return 0, err
	}
	return o.Spool.RetryDead(dest, guids...)
}

// PurgeDead implements SpoolOps.
func (o OfflineSpool) PurgeDead(dest string, guids ...string) (int, error) {
	if err := o.known(dest); err != nil {
		return 0, err
	}
	return o.Spool.PurgeDead(dest, guids...)
}

// Skip implements SpoolOps: with no daemon running, the message in the
// way is the first in the destination's queue.
func (o OfflineSpool) Skip(_ context.Context, dest, reason string) (string, error) {
	if err := o.known(dest); err != nil {
		return "", err
	}
	head, err := o.Spool.Next(dest, 0, 1)
	if err != nil {
		return "", err
	}
	if len(head) == 0 {
		return "", errors.New("its queue is empty: nothing to skip")
	}
	if err := o.Spool.Kill(dest, head[0].Seq, "skipped by an operator: "+reason, head[0].Attempts); err != nil {
		return "", err
	}
	return head[0].GUID, nil
}
