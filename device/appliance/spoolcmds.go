package appliance

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/health"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/storage"
)

// SpoolOps is what the spool commands (spool-stats and the dead-letter
// commands) act on: the running gateway, or the spool the CLI opens itself
// while the daemon is stopped. Both answer through the same handlers, so
// `hl7edge spool` prints the same shape either way.
type SpoolOps interface {
	// Stats is the spool's figures with every source's state and counters.
	Stats() storage.Stats
	DeadLetters(dest string) ([]storage.DeadLetter, error)
	RetryDead(dest string, guids ...string) (int, error)
	PurgeDead(dest string, guids ...string) (int, error)
	Trace(q storage.TraceQuery) (storage.TraceResult, error)
	Replay(ctx context.Context, r storage.ReplayRequest) (storage.ReplayResult, error)
}

// RegisterSpoolCommands registers spool-stats, dead-list, dead-retry,
// dead-purge (privileged: it deletes data), trace and replay (privileged:
// it sends messages again) on d.
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
		return out, fmt.Sprintf("%d dead letters", len(out)), nil
	}))
	d.Register(command.DeadRetry, with(func(args nameArgs) (any, string, error) {
		n, err := args.target()
		if err != nil {
			return nil, "", err
		}
		k, err := ops.RetryDead(n, args.GUIDs...)
		return map[string]int{"retried": k}, fmt.Sprintf("%d dead letters queued again", k), err
	}))
	d.RegisterPrivileged(command.DeadPurge, with(func(args nameArgs) (any, string, error) {
		n, err := args.target()
		if err != nil {
			return nil, "", err
		}
		k, err := ops.PurgeDead(n, args.GUIDs...)
		return map[string]int{"purged": k}, fmt.Sprintf("%d dead letters deleted", k), err
	}))
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

func (l liveSpool) Stats() storage.Stats {
	var st storage.Stats
	if sp := l.b.Gateway.Spool(); sp != nil {
		st = sp.Stats()
	} else if err := l.b.Gateway.SpoolError(); err != nil {
		st.Error = err.Error() // unreadable: say so, with the sources below
	}
	st.Sources = map[string]storage.SourceStats{}
	snap := l.b.Registry.Snapshot()
	for _, s := range snap.Sources {
		st.Sources[s.Name] = storage.SourceStats{State: string(s.State), Counters: s.Counters, LastError: s.LastError}
	}
	for _, d := range snap.Destinations {
		if ds, ok := st.Destinations[d.Name]; ok && d.Lanes != nil {
			ds.Lanes = d.Lanes
			st.Destinations[d.Name] = ds
		}
	}
	return st
}

func (l liveSpool) DeadLetters(dest string) ([]storage.DeadLetter, error) {
	return l.b.Gateway.DeadLetters(dest)
}

func (l liveSpool) RetryDead(dest string, guids ...string) (int, error) {
	return l.b.Gateway.RetryDead(dest, guids...)
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
}

// Stats implements SpoolOps.
func (o OfflineSpool) Stats() storage.Stats {
	st := o.Spool.Stats()
	st.Sources = map[string]storage.SourceStats{}
	for _, s := range o.Sources {
		st.Sources[s] = storage.SourceStats{State: string(health.Stopped)}
	}
	return st
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
	return o.Spool.DeadLetters(dest)
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
