package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/storage"
)

// cmdTrace says where messages went: by GUID or control ID, or over a time
// range. Like `spool`, through the daemon or, when it is stopped, from the
// spool itself.
func cmdTrace(ctx context.Context, args []string, stdout io.Writer) error {
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	path := fs.String("config", config.DefaultPath, "configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	since := fs.String("since", "", "from this time: RFC 3339, YYYY-MM-DD HH:MM or HH:MM (local), or a duration ago (90m)")
	until := fs.String("until", "", "up to this time (default now)")
	q := storage.TraceQuery{}
	fs.StringVar(&q.Source, "source", "", "only messages from this source")
	fs.StringVar(&q.Dest, "dest", "", "only messages routed to this destination")
	fs.StringVar(&q.Type, "type", "", "only this message type (MSH-9, e.g. ORU^R01)")
	fs.StringVar(&q.State, "state", "", "only messages in this state: "+strings.Join(storage.TraceStates, "|"))
	fs.IntVar(&q.Limit, "limit", 0, fmt.Sprintf("at most this many messages (default %d, at most %d)", storage.DefaultTraceLimit, storage.MaxTraceLimit))
	if err := fs.Parse(args); err != nil {
		return err
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
	}
	q.ID = id
	if id == "" && *since == "" {
		return errors.New("usage: hl7edge trace ID | --since T [--until T] [--source S] [--dest D] [--type T] [--state S] [--limit N] [--json]")
	}
	var err error
	now := time.Now()
	if q.Since, err = parseWhen("--since", *since, now); err != nil {
		return err
	}
	if q.Until, err = parseWhen("--until", *until, now); err != nil {
		return err
	}
	var res storage.TraceResult
	if err := askInto(ctx, *path, command.Trace, q, &res); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, res)
	}
	if id != "" {
		return printTraceDetail(stdout, res)
	}
	return printTraceTable(stdout, res)
}

// cmdReplay queues retained messages again for a destination.
func cmdReplay(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	path := fs.String("config", config.DefaultPath, "configuration file")
	asJSON := fs.Bool("json", false, "print JSON")
	since := fs.String("since", "", "messages received from this time (required; forms as for trace)")
	until := fs.String("until", "", "up to this time (default now)")
	r := storage.ReplayRequest{}
	fs.StringVar(&r.To, "to", "", "the destination to send them to again (required)")
	fs.StringVar(&r.Source, "source", "", "only messages from this source")
	fs.StringVar(&r.Type, "type", "", "only this message type (MSH-9)")
	fs.BoolVar(&r.DryRun, "dry-run", false, "count what would be sent; send nothing")
	fs.BoolVar(&r.Partial, "partial", false, "send what is still retained even if part of the range is not")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if r.To == "" || *since == "" {
		return errors.New("usage: hl7edge replay --to DEST --since T [--until T] [--source S] [--type T] [--dry-run] [--partial] [--json]")
	}
	var err error
	now := time.Now()
	if r.Since, err = parseWhen("--since", *since, now); err != nil {
		return err
	}
	if r.Until, err = parseWhen("--until", *until, now); err != nil {
		return err
	}
	var res storage.ReplayResult
	if err := askInto(ctx, *path, command.Replay, r, &res); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, res)
	}
	queued := fmt.Sprintf("%d queued again", res.Replayed)
	if r.DryRun {
		queued = "dry run, nothing queued"
	}
	fmt.Fprintf(stdout, "replay to %s: %d matched, %d no longer retained, %s", r.To, res.Matched, res.Missing, queued)
	if res.FirstReceivedAt != nil {
		fmt.Fprintf(stdout, "; received %s to %s", res.FirstReceivedAt.Local().Format(time.RFC3339), res.LastReceivedAt.Local().Format(time.RFC3339))
	}
	fmt.Fprintln(stdout)
	return nil
}

// askInto sends one command with args through the daemon or the spool and
// decodes its data into out.
func askInto(ctx context.Context, path, name string, args, out any) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	argsJSON, err := json.Marshal(args)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, cliWait)
	defer cancel()
	data, err := ask(cctx, cfg, name, argsJSON)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(data)
	return json.Unmarshal(b, out)
}

func printJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// parseWhen reads a time as an operator types it; "" is the zero time.
func parseWhen(flagName, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	if t, err := time.ParseInLocation("15:04", s, time.Local); err == nil {
		y, m, d := now.Date()
		return time.Date(y, m, d, t.Hour(), t.Minute(), 0, 0, time.Local), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: write a time as 2026-12-07T22:00:00Z, 2026-12-07 22:00, 22:00 (today, local) or a duration ago such as 90m", flagName, s)
}

func printTraceTable(w io.Writer, res storage.TraceResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RECEIVED\tCONTROL ID\tTYPE\tSOURCE\tGUID\tWHERE")
	for _, m := range res.Messages {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ReceivedAt.Local().Format(time.RFC3339), m.ControlID, m.Type, m.Source, m.GUID, where(m))
	}
	if res.More {
		fmt.Fprintln(tw, "(more messages match: narrow the range or raise --limit)")
	}
	return tw.Flush()
}

// where is a message's route in a few words: each destination's state.
func where(m storage.MessageTrace) string {
	if m.Route != "destinations" {
		return m.Route
	}
	var parts []string
	for _, d := range m.Destinations {
		parts = append(parts, d.Name+" "+d.State)
	}
	return strings.Join(parts, ", ")
}

func printTraceDetail(w io.Writer, res storage.TraceResult) error {
	if len(res.Messages) == 0 {
		fmt.Fprintln(w, "no trace of that message (traces are kept for spool.trace_retain)")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, m := range res.Messages {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "message\t%s\ncontrol id\t%s\ntype\t%s\nsource\t%s %s\nreceived\t%s (ACK %s, %d bytes)\nroute\t%s\n",
			m.GUID, m.ControlID, m.Type, m.Source, m.Peer, m.ReceivedAt.Local().Format(time.RFC3339), m.ACK, m.Size, where(m))
		if m.ReplayOf != "" {
			fmt.Fprintf(tw, "replay of\t%s\n", m.ReplayOf)
		}
		for _, d := range m.Destinations {
			fmt.Fprintf(tw, "  %s\t%s after %d attempts %s\n", d.Name, d.State, d.Attempts, d.LastError)
		}
		for _, e := range m.Events {
			fmt.Fprintf(tw, "  %s\t%s %s %s %s\n", e.At.Local().Format("2006-01-02 15:04:05.000"), e.What, e.Dest, e.Outcome, e.Detail)
		}
	}
	return tw.Flush()
}
