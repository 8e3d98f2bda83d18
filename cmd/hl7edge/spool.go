package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hl7edge/hl7edge/device/admin"
	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/pipeline/gateway"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
	"github.com/hl7edge/hl7edge/storage"
)

// spoolUsage is the spool commands' usage, for every mistake in calling one.
const spoolUsage = `usage: hl7edge spool stats [--json]
       hl7edge spool dead list|retry|purge --destination NAME [--guid G]...
       hl7edge spool skip --destination NAME --reason TEXT
       hl7edge spool undeliverable list|retry|purge [--guid G]...
       hl7edge spool salvage [--json]
each with [--config FILE] (default ` + config.DefaultPath + `)`

// guidList is a repeatable --guid flag.
type guidList []string

func (g *guidList) String() string     { return strings.Join(*g, ",") }
func (g *guidList) Set(v string) error { *g = append(*g, v); return nil }

// spoolCommands maps "sub action" to the command it sends.
var spoolCommands = map[string]string{
	"stats": command.SpoolStats, "dead list": command.DeadList, "dead retry": command.DeadRetry,
	"dead purge": command.DeadPurge, "skip": command.SpoolSkip,
	"undeliverable list": command.UndeliverableList, "undeliverable retry": command.UndeliverableRetry,
	"undeliverable purge": command.UndeliverablePurge,
}

// cmdSpool inspects the spool: through the running daemon when there is one
// (Badger lets one process open it), otherwise directly.
func cmdSpool(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(spoolUsage)
	}
	sub, rest := args[0], args[1:]
	key := sub
	if sub == "dead" || sub == "undeliverable" {
		// The action word comes first: `spool dead --config F` is a
		// missing action, not a configuration named "F" to ignore.
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return fmt.Errorf("spool %s needs an action word, list, retry or purge, before the flags\n%s", sub, spoolUsage)
		}
		key, rest = sub+" "+rest[0], rest[1:]
	}
	name, known := spoolCommands[key]
	if !known && sub != "salvage" {
		return fmt.Errorf("unknown spool command %q\n%s", key, spoolUsage)
	}
	fs := flag.NewFlagSet("spool "+key, flag.ContinueOnError)
	path := fs.String("config", config.DefaultPath, "configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	dest := fs.String("destination", "", "destination name")
	reason := fs.String("reason", "", "skip: why the message is moved aside, kept with the dead letter (no patient data)")
	var guids guidList
	fs.Var(&guids, "guid", "dead retry|purge: only this dead letter (repeat for more); all of them without")
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("spool %s: unexpected %q\n%s", key, fs.Args(), spoolUsage)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if sub == "salvage" {
		return salvage(ctx, cfg, *asJSON, stdout)
	}
	if (sub == "dead" || sub == "skip") && *dest == "" {
		return fmt.Errorf("spool %s: --destination NAME is required", key)
	}
	if sub == "skip" && strings.TrimSpace(*reason) == "" {
		return errors.New("spool skip: --reason TEXT is required: it is kept with the dead letter, so whoever retries or purges it knows why (no patient data)")
	}
	argsJSON, _ := json.Marshal(map[string]any{"destination": *dest, "guids": []string(guids), "reason": *reason})
	cctx, cancel := context.WithTimeout(ctx, cliWait)
	defer cancel()
	data, err := ask(cctx, cfg, name, argsJSON)
	if err != nil {
		return err
	}
	if *asJSON || name != command.SpoolStats && name != command.DeadList && name != command.UndeliverableList {
		b, _ := json.Marshal(data)
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	return printHuman(stdout, name, data)
}

// cliWait bounds how long a spool command keeps trying the daemon and the
// spool before it gives up.
const cliWait = 30 * time.Second

// ask answers a spool command through the daemon's admin socket, or from the
// spool itself when no daemon runs; both run the same handlers
// (appliance.RegisterSpoolCommands), so the answer has one shape. A daemon
// that is starting or stopping holds the spool without answering on its
// socket yet (or any more); then the command waits and asks again instead
// of taking the spool from it: an operator's look must never stop the
// gateway.
func ask(ctx context.Context, cfg *config.Config, name string, argsJSON []byte) (any, error) {
	req := command.Request{ID: fmt.Sprintf("cli-%d", time.Now().UnixNano()), Name: name, Args: argsJSON}
	for {
		resp, err := admin.Call(ctx, cfg.Admin.Socket, req)
		if errors.Is(err, admin.ErrNoDaemon) {
			resp, err = offline(ctx, cfg, req)
		}
		switch {
		case errors.Is(err, storage.ErrInUse):
		case goingAway(err):
			// A stopping daemon closes its listener with our connection
			// still in the backlog, unread and unanswered: ask again, the
			// next daemon or the spool itself will answer.
		case err != nil:
			return nil, err
		case resp.Status != command.Successful:
			return nil, fmt.Errorf("%s: %s", resp.Status, resp.Detail)
		default:
			return resp.Data, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (the daemon holds the spool but did not answer on %s within %s: is it starting or stopping?)", err, cfg.Admin.Socket, cliWait)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// goingAway says the daemon closed an admin connection without reading
// the request: the admin server answers every connection it accepts before
// it stops, so an EOF or reset means it never took this one.
func goingAway(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// salvage recovers what is readable of a spool that cannot be opened into a
// fresh one (docs/power-loss.md). The daemon must be stopped: it holds the
// spool even when the spool is unreadable, and a salvage under it would
// pull the files from under its feet.
func salvage(ctx context.Context, cfg *config.Config, asJSON bool, stdout io.Writer) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := admin.Call(cctx, cfg.Admin.Socket, command.Request{ID: "salvage-check", Name: command.SpoolStats})
	cancel()
	if !errors.Is(err, admin.ErrNoDaemon) {
		return fmt.Errorf("the hl7edge daemon answers on %s: stop it first (sudo systemctl stop hl7edge), then salvage, then start it", cfg.Admin.Socket)
	}
	if err := sameOwner(cfg.Spool.Dir); err != nil {
		return err
	}
	dests := gateway.Delivering(cfg.Types, cfg.Destinations)
	rep, err := storage.Salvage(cfg.Spool.Storage(), storage.Options{Destinations: dests})
	if err != nil {
		return fmt.Errorf("%w (the unreadable spool, if it was moved, is in %s untouched)", err, rep.MovedTo)
	}
	if asJSON {
		b, _ := json.Marshal(rep)
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "salvaged %s (read by %s)\nunreadable spool kept, untouched, in %s\n\n", cfg.Spool.Dir, rep.Method, rep.MovedTo)
	fmt.Fprintf(tw, "queued again (same GUIDs)\t%d\nowed to no destination\t%d\ndead letters\t%d\nundeliverable\t%d\nremembered remote IDs\t%d\nqueued but unreadable (lost)\t%d\n",
		rep.Queued, rep.Delivered, rep.Dead, rep.Undeliverable, rep.RemoteIDs, rep.QueuedNoRecord)
	for _, p := range rep.Problems {
		fmt.Fprintf(tw, "problem: %s\n", p)
	}
	return tw.Flush()
}

// sameOwner refuses to work on a spool that belongs to another user:
// files created as root would keep the daemon from opening it.
func sameOwner(dir string) error {
	if st, err := os.Stat(dir); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
			return fmt.Errorf("spool %s belongs to user id %d, not to you (%d): run this as the daemon's user (sudo -u hl7edge hl7edge spool)", dir, sys.Uid, os.Geteuid())
		}
	}
	return nil
}

// offline opens the spool itself because no daemon is running, and answers
// req with the daemon's own handlers. It does not wait for the spool's
// lock: whoever holds it is a daemon to ask instead.
func offline(ctx context.Context, cfg *config.Config, req command.Request) (command.Response, error) {
	// Opening the spool as another user (root, typically) would leave files
	// in it that the daemon can no longer open.
	if err := sameOwner(cfg.Spool.Dir); err != nil {
		return command.Response{}, err
	}
	dests := gateway.Delivering(cfg.Types, cfg.Destinations)
	sp, err := storage.Open(cfg.Spool.Storage(), storage.Options{Destinations: dests})
	if err != nil {
		return command.Response{}, err
	}
	defer sp.Close()
	ops := appliance.OfflineSpool{Spool: sp, Destinations: dests, ConfigPath: cfg.Path}
	if ops.Reroute, err = gateway.NewRerouter(cfg.Types, cfg.Destinations); err != nil {
		return command.Response{}, err
	}
	for _, s := range cfg.Sources {
		ops.Sources = append(ops.Sources, s.Name)
	}
	d := command.NewDispatcher(nil)
	appliance.RegisterSpoolCommands(d, ops)
	// The operator is on the box, as on the admin socket.
	resp := d.Dispatch(command.WithLocal(ctx), req)
	// Through JSON, as the admin socket carries it, so both paths print
	// byte for byte the same form (keys in the same order).
	b, err := json.Marshal(resp)
	if err != nil {
		return command.Response{}, fmt.Errorf("spool command %s: answer does not encode as JSON: %w", req.Name, err)
	}
	var out command.Response
	if err := json.Unmarshal(b, &out); err != nil {
		return command.Response{}, fmt.Errorf("spool command %s: answer does not decode: %w", req.Name, err)
	}
	return out, nil
}

// since says from when retained messages go back, if any are.
func since(t *time.Time) string {
	if t == nil {
		return ""
	}
	return ", since " + t.Local().Format(time.RFC3339)
}

func printHuman(w io.Writer, name string, data any) error {
	b, _ := json.Marshal(data)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	switch name {
	case command.SpoolStats:
		var st appliance.SpoolReport
		if err := json.Unmarshal(b, &st); err != nil {
			return err
		}
		// Delivered messages stay on disk until their segment is delivered
		// whole: "messages" alone reads like a backlog when QUEUED is 0.
		fmt.Fprintf(tw, "messages\t%d held (delivered ones until their segment leaves; QUEUED is what is still to deliver)\nbytes\t%s of %s (max_bytes)\nundeliverable\t%d\nfree disk\t%s\n",
			st.Messages, units.Size(st.Bytes).Human(), units.Size(st.MaxBytes), st.Undeliverable, units.Size(st.FreeDiskBytes).Human())
		fmt.Fprintf(tw, "retained for replay\t%d messages, %s%s\ntraces\t%s\n\n", st.RetainedMessages, units.Size(st.RetainedBytes).Human(), since(st.OldestRetained), units.Size(st.TraceBytes).Human())
		fmt.Fprintln(tw, "DESTINATION\tQUEUED\tDELIVERED\tDEAD\tOLDEST\tLANES")
		for _, n := range slices.Sorted(maps.Keys(st.Destinations)) {
			d := st.Destinations[n]
			lanes := "-"
			if l := d.Lanes; l != nil {
				lanes = fmt.Sprintf("%d (busy %d, backoff %d, blocked %d)", l.Lanes, l.Busy, l.Backoff, l.Blocked)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", n, d.Queued, d.Delivered, d.Dead, (time.Duration(d.OldestAgeSeconds) * time.Second).String(), lanes)
		}
		printSources(tw, st.Sources)
	case command.UndeliverableList:
		var us []appliance.UndeliverableInfo
		if err := json.Unmarshal(b, &us); err != nil {
			return err
		}
		fmt.Fprintln(tw, "GUID\tCONTROL ID\tTYPE\tSOURCE\tRECEIVED")
		for _, u := range us {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.GUID, u.ControlID, u.MessageType, u.Source, u.Received.Format(time.RFC3339))
		}
	case command.DeadList:
		var dls []appliance.DeadLetterInfo
		if err := json.Unmarshal(b, &dls); err != nil {
			return err
		}
		fmt.Fprintln(tw, "GUID\tCONTROL ID\tSOURCE\tRECEIVED\tATTEMPTS\tREASON")
		for _, d := range dls {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", d.GUID, d.ControlID, d.Source, d.Received.Format(time.RFC3339), d.Attempts, strings.ReplaceAll(d.Reason, "\n", " "))
		}
	}
	return nil
}

// printSources adds each source's state and counters to spool stats, as
// --json has them (none when the spool was read with the daemon stopped).
func printSources(w io.Writer, sources map[string]appliance.SourceStats) {
	if len(sources) == 0 {
		return
	}
	fmt.Fprintln(w, "\nSOURCE\tSTATE\tCOUNTERS")
	for _, n := range slices.Sorted(maps.Keys(sources)) {
		s := sources[n]
		var cs []string
		for _, k := range slices.Sorted(maps.Keys(s.Counters)) {
			cs = append(cs, fmt.Sprintf("%s=%d", k, s.Counters[k]))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", n, s.State, strings.Join(cs, " "))
	}
}
