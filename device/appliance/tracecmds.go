package appliance

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/strictjson"
	"github.com/hl7edge/hl7edge/storage"
)

// maxRemoteTrace caps a trace answer over MQTT, where an answer may hold
// at most 256 KiB (a traced message is a few hundred bytes of JSON).
const maxRemoteTrace = 200

// registerTraceCommands registers trace (read-only: identifiers, MSH-9,
// MSH-10, names and times, never content) and replay (privileged: it
// sends messages again).
func registerTraceCommands(d *command.Dispatcher, ops SpoolOps) {
	d.Register(command.Trace, func(ctx context.Context, raw json.RawMessage) (any, string, error) {
		var q storage.TraceQuery
		if err := strictArgs(raw, &q); err != nil {
			return nil, "", err
		}
		if !command.IsLocal(ctx) {
			if q.Limit > maxRemoteTrace {
				return nil, "", fmt.Errorf("limit %d is over %d, the most one MQTT answer holds: narrow the range, or use `hl7edge trace` on the box", q.Limit, maxRemoteTrace)
			}
			if q.Limit == 0 {
				q.Limit = min(storage.DefaultTraceLimit, maxRemoteTrace)
			}
		}
		res, err := ops.Trace(q)
		if err != nil {
			return nil, "", err
		}
		detail := fmt.Sprintf("%d messages", len(res.Messages))
		if res.More {
			detail += " (more match: narrow the range or raise limit)"
		}
		return res, detail, nil
	})
	d.RegisterPrivileged(command.Replay, func(ctx context.Context, raw json.RawMessage) (any, string, error) {
		var r storage.ReplayRequest
		if err := strictArgs(raw, &r); err != nil {
			return nil, "", err
		}
		res, err := ops.Replay(ctx, r)
		if err != nil {
			return res, "", err
		}
		if r.DryRun {
			return res, fmt.Sprintf("dry run: %d messages match, %d no longer retained; nothing queued", res.Matched, res.Missing), nil
		}
		return res, fmt.Sprintf("%d of %d messages queued again for %s", res.Replayed, res.Matched, r.To), nil
	})
}

func strictArgs(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return nil
	}
	if err := strictjson.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("args are not the expected JSON object: %w", err)
	}
	return nil
}

// Trace implements SpoolOps.
func (l liveSpool) Trace(q storage.TraceQuery) (storage.TraceResult, error) {
	return l.b.Gateway.Trace(q)
}

// Replay implements SpoolOps.
func (l liveSpool) Replay(ctx context.Context, r storage.ReplayRequest) (storage.ReplayResult, error) {
	return l.b.Gateway.Replay(ctx, r)
}

// Trace implements SpoolOps.
func (o OfflineSpool) Trace(q storage.TraceQuery) (storage.TraceResult, error) {
	return o.Spool.Trace(q)
}

// Replay implements SpoolOps. The messages are queued in the spool and
// delivered when the daemon starts.
func (o OfflineSpool) Replay(ctx context.Context, r storage.ReplayRequest) (storage.ReplayResult, error) {
	if err := o.known(r.To); err != nil {
		return storage.ReplayResult{}, err
	}
	return o.Spool.Replay(ctx, r)
}
