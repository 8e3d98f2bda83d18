package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/device/frontpanel"
	"github.com/hl7edge/hl7edge/device/status"
	"github.com/hl7edge/hl7edge/device/strictjson"
)

// maxIdentifySeconds caps identify: the LEDs are how a nurse reads the box.
const maxIdentifySeconds = 3600

type nameArgs struct {
	Name        string   `json:"name"`
	Destination string   `json:"destination"`
	GUIDs       []string `json:"guids"`
	Seconds     int      `json:"seconds"`
	Lines       int      `json:"lines"`
	YAML        string   `json:"yaml"`
	Grace       string   `json:"grace"`
	Reason      string   `json:"reason"`
	ID          string   `json:"id"`
	Limit       int      `json:"limit"`
	Level       string   `json:"level"`
	Component   string   `json:"component"`
	After       *uint64  `json:"after"`
}

func parseArgs(raw json.RawMessage) (nameArgs, error) {
	var a nameArgs
	if len(raw) == 0 {
		return a, nil
	}
	// Strict: args are part of the signed bytes of a signed command.
	if err := strictjson.Unmarshal(raw, &a); err != nil {
		return a, fmt.Errorf("args are not the expected JSON object: %w", err)
	}
	return a, nil
}

func (a nameArgs) target() (string, error) {
	n := a.Name
	if n == "" {
		n = a.Destination
	}
	if n == "" {
		return "", errors.New(`args need "name" (a source or destination)`)
	}
	return n, nil
}

// DeadLetterInfo is one dead letter as listed to an operator: identifiers
// and the reason, never the content.
type DeadLetterInfo struct {
	GUID      string    `json:"guid"`
	ControlID string    `json:"control_id"`
	Source    string    `json:"source"`
	Received  time.Time `json:"received"`
	Attempts  int       `json:"attempts"`
	Reason    string    `json:"reason"`
}

func (a *Appliance) register(b *Box, engine *frontpanel.Engine, alarm func(kind, detail string)) {
	d, gw := b.Commands, b.Gateway
	d.RegisterPrivileged(command.ConfigApply, func(ctx context.Context, raw json.RawMessage) (any, string, error) {
		args, err := parseArgs(raw)
		if err != nil {
			return nil, "", err
		}
		return a.apply(b, command.IDFrom(ctx), command.IsLocal(ctx), args)
	})
	with := func(f func(nameArgs) (any, string, error)) command.Handler {
		return func(_ context.Context, raw json.RawMessage) (any, string, error) {
			args, err := parseArgs(raw)
			if err != nil {
				return nil, "", err
			}
			return f(args)
		}
	}
	d.Register(command.ConfigApplyResult, with(func(args nameArgs) (any, string, error) {
		if args.ID == "" {
			return nil, "", errors.New(`args need "id": the id of the config-apply command`)
		}
		o := a.outcome(args.ID)
		return o, o.Detail, nil
	}))
	d.Register(command.Health, with(func(nameArgs) (any, string, error) { return b.Registry.Snapshot(), "", nil }))
	d.Register(command.StatusReport, with(func(nameArgs) (any, string, error) {
		r := status.Build(b.Registry.Snapshot(), engine.Inputs())
		if r.Healthy {
			return r, "healthy", nil
		}
		return r, "not healthy", nil
	}))
	RegisterSpoolCommands(d, liveSpool{b})
	d.Register(command.Reping, with(func(args nameArgs) (any, string, error) {
		n, err := args.target()
		if err == nil {
			err = gw.Reping(n)
		}
		return nil, "will ping before the next post", err
	}))
	// Pause stops a source's intake or a destination's deliveries with one
	// command: over MQTT it runs only signed (a leaked broker password must
	// not be enough to stop a ward's feed). Resume only restores.
	d.RegisterPrivileged(command.Pause, with(func(args nameArgs) (any, string, error) {
		n, err := args.target()
		if err == nil {
			err = gw.Pause(n)
		}
		return nil, "paused " + n, err
	}))
	d.Register(command.Resume, with(func(args nameArgs) (any, string, error) {
		n, err := args.target()
		if err == nil {
			err = gw.Resume(n)
		}
		return nil, "resumed " + n, err
	}))
	d.Register(command.Identify, with(func(args nameArgs) (any, string, error) {
		s := args.Seconds
		if s <= 0 {
			s = 30
		}
		if s > maxIdentifySeconds {
			return nil, "", fmt.Errorf("identify for %d s: at most %d s (an hour); send it again for longer", s, maxIdentifySeconds)
		}
		engine.Identify(time.Duration(s) * time.Second)
		return nil, fmt.Sprintf("blinking all LEDs for %ds", s), nil
	}))
	d.Register(command.ConfigGet, with(func(nameArgs) (any, string, error) {
		data, err := os.ReadFile(b.Config.Path)
		if err != nil {
			return nil, "", fmt.Errorf("read configuration: %w", err)
		}
		return map[string]string{"yaml": string(data), "path": b.Config.Path}, "", nil
	}))
	d.Register(command.TailLog, with(a.tailLog))
	d.Register(command.Restart, with(func(nameArgs) (any, string, error) {
		a.requestRestart("restart command")
		return nil, "restarting", nil
	}))
	_ = alarm
}

// apply validates a new configuration, writes it atomically, keeps the old
// one for roll-back and restarts. The roll-back check runs after the restart.
// A remote command (not from the admin socket) may not lower transport
// security, whatever vouches for it.
func (a *Appliance) apply(b *Box, id string, local bool, args nameArgs) (any, string, error) {
	if args.YAML == "" {
		return nil, "", errors.New(`args need "yaml": the whole new configuration file`)
	}
	next, err := config.Parse([]byte(args.YAML))
	if err != nil {
		return nil, "", fmt.Errorf("configuration refused, the current one stays: %w", err)
	}
	if err := remoteApplyAllowed(b.Config, next, local); err != nil {
		return nil, "", err
	}
	grace := a.o.ApplyGrace
	if args.Grace != "" {
		g, err := time.ParseDuration(args.Grace)
		if err != nil || g <= 0 {
			return nil, "", fmt.Errorf("grace %q: use a Go duration such as 60s", args.Grace)
		}
		grace = g
	}
	previous, err := os.ReadFile(b.Config.Path)
	if err != nil {
		return nil, "", fmt.Errorf("read current configuration: %w", err)
	}
	if err := a.beginTrial(id, previous, []byte(args.YAML)); err != nil {
		return nil, "", fmt.Errorf("configuration not applied, the current one stays: its trial could not be recorded: %w", err)
	}
	if err := a.writeConfig(b.Config.Path, []byte(args.YAML)); err != nil {
		// A failure after the rename (the directory's sync) leaves the new
		// file in place, not known durable: put the current one back, or
		// the next start would run the new one without a trial.
		if rerr := a.writeConfig(b.Config.Path, previous); rerr != nil {
			return nil, "", fmt.Errorf("configuration not applied: %w; putting the current one back failed too (%v): check %s before the next restart", err, rerr, b.Config.Path)
		}
		a.endTrial(id)
		return nil, "", fmt.Errorf("configuration not applied, the current one stays: %w", err)
	}
	a.mu.Lock()
	a.pending = &pendingApply{id: id, previous: previous, grace: grace, before: b.Registry.Snapshot()}
	a.mu.Unlock()
	a.settle(id, ApplyOnTrial, fmt.Sprintf("configuration from command %s on trial for %s", id, grace))
	a.requestRestart("new configuration")
	return map[string]string{"grace": grace.String()}, fmt.Sprintf("applied; restarting; rolled back unless healthy after %s", grace), nil
}

// remoteApplyAllowed refuses a remote configuration that would lower
// transport security or move state (config.RemoteRefusals) or change what the
// gateway trusts (config.TrustChanges); a local one passes.
func remoteApplyAllowed(cur, next *config.Config, local bool) error {
	if local {
		return nil
	}
	if d := config.RemoteRefusals(cur, next); len(d) > 0 {
		return fmt.Errorf("configuration refused, the current one stays: a remote config-apply cannot make this change (%s); "+
			"a local operator can apply it through the admin socket %s or by editing %s", strings.Join(d, "; "), cur.Admin.Socket, cur.Path)
	}
	if d := config.TrustChanges(cur, next); len(d) > 0 {
		return fmt.Errorf("configuration refused, the current one stays: a remote config-apply cannot change what the gateway trusts (%s); "+
			"a local operator can apply it through the admin socket %s or by editing %s", strings.Join(d, "; "), cur.Admin.Socket, cur.Path)
	}
	return nil
}

// tailLog answers tail-log: the last lines, at or above a level and of one
// component when asked; with "after" (a follower's cursor), only the lines
// since, with the cursor for the next call.
func (a *Appliance) tailLog(args nameArgs) (any, string, error) {
	n := args.Lines
	if n <= 0 || n > 1000 {
		n = 100
	}
	var level slog.Level = slog.LevelDebug
	if args.Level != "" {
		if err := level.UnmarshalText([]byte(args.Level)); err != nil {
			return nil, "", fmt.Errorf("level %q: use debug, info, warn or error", args.Level)
		}
	}
	var after uint64
	if args.After != nil {
		after = *args.After
	}
	lines, next := a.ring.since(after, n, logFilter(level, args.Component))
	if args.After == nil {
		return lines, "", nil
	}
	return map[string]any{"lines": lines, "next": next}, "", nil
}
