package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/hl7edge/hl7edge/device/admin"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/config"
)

// callDaemon sends one command to the running daemon through the admin
// socket named by the configuration at path and returns its answer; a
// failed or rejected command is an error with the daemon's reason.
func callDaemon(ctx context.Context, path, name string, args any) (command.Response, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return command.Response{}, err
	}
	b, err := json.Marshal(args)
	if err != nil {
		return command.Response{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, cliWait)
	defer cancel()
	resp, err := admin.Call(cctx, cfg.Admin.Socket, command.Request{ID: fmt.Sprintf("cli-%d", time.Now().UnixNano()), Name: name, Args: b})
	if errors.Is(err, admin.ErrNoDaemon) {
		return resp, fmt.Errorf("%w: these commands act on the running daemon (sudo systemctl start hl7edge)", err)
	}
	if err != nil {
		return resp, err
	}
	if resp.Status != command.Successful {
		return resp, fmt.Errorf("%s: %s", resp.Status, resp.Detail)
	}
	return resp, nil
}

// cmdBox runs pause, resume or reping on a source or destination, or
// identify, on the running daemon: what a technician does at the box, the
// same commands MQTT carries.
func cmdBox(ctx context.Context, name string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", config.DefaultPath, "configuration file (names the admin socket)")
	seconds := fs.Int("seconds", 30, "identify: how long the LEDs blink (at most 3600)")
	pos, err := parseAnyOrder(fs, args)
	if err != nil {
		return fmt.Errorf("%w\nusage: hl7edge pause|resume|reping NAME [--config FILE], hl7edge identify [--seconds 30] [--config FILE]", err)
	}
	var a map[string]any
	switch {
	case name == command.Identify && len(pos) == 0:
		a = map[string]any{"seconds": *seconds}
	case name != command.Identify && len(pos) == 1:
		a = map[string]any{"name": pos[0]}
	default:
		return errors.New("usage: hl7edge pause|resume|reping NAME [--config FILE], hl7edge identify [--seconds 30] [--config FILE]")
	}
	resp, err := callDaemon(ctx, *path, name, a)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, resp.Detail)
	return nil
}

// followEvery is how often logs --follow asks for new lines.
const followEvery = time.Second

// cmdLogs prints the daemon's last log lines (the ones tail-log keeps; no
// message content), filtered by level and component, and with --follow
// keeps printing new ones until interrupted.
func cmdLogs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("logs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath, "configuration file (names the admin socket)")
	lines := fs.Int("lines", 100, "how many of the last lines (at most 1000)")
	level := fs.String("level", "", "only lines at or above: debug, info, warn, error")
	component := fs.String("component", "", "only lines of this component, source or destination (spool, intake, ehr...)")
	follow := fs.Bool("follow", false, "keep printing new lines until interrupted")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var after uint64
	for first := true; ; first = false {
		a := map[string]any{"lines": *lines, "level": *level, "component": *component, "after": after}
		if !first {
			a["lines"] = 1000
		}
		resp, err := callDaemon(ctx, *path, command.TailLog, a)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && (first || !*follow):
			return err
		case err == nil:
			next, printed := printLogLines(stdout, resp.Data)
			if next < after && !printed {
				next = 0 // the daemon restarted: its lines count from the start again
			}
			after = next
		}
		if !*follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followEvery):
		}
	}
}

// printLogLines prints a tail-log answer with a cursor and returns the
// cursor and whether it printed anything.
func printLogLines(w io.Writer, data any) (uint64, bool) {
	var page struct {
		Lines []string `json:"lines"`
		Next  uint64   `json:"next"`
	}
	b, _ := json.Marshal(data)
	if json.Unmarshal(b, &page) != nil {
		return 0, false
	}
	for _, l := range page.Lines {
		fmt.Fprintln(w, l)
	}
	return page.Next, len(page.Lines) > 0
}
