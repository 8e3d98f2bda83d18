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
	"github.com/hl7edge/hl7edge/device/status"
)

// Exit codes of `hl7edge status`, for scripts and monitoring agents.
const (
	exitHealthy   = 0
	exitUnhealthy = 1
	exitUnknown   = 2 // usage, configuration, or no daemon to ask
)

// cmdStatus asks the running daemon how it is and prints one screen.
func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath, "configuration file (for admin.socket)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return exitUnknown
	}
	r, err := fetchStatus(ctx, *path)
	if err != nil {
		fmt.Fprintf(stderr, "hl7edge status: %v\n", err)
		if errors.Is(err, admin.ErrNoDaemon) {
			fmt.Fprintln(stderr, "  is the service running? systemctl status hl7edge; journalctl -u hl7edge -n 50")
		}
		return exitUnknown
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
	} else {
		r.Render(stdout)
	}
	if r.Healthy {
		return exitHealthy
	}
	return exitUnhealthy
}

func fetchStatus(ctx context.Context, path string) (status.Report, error) {
	var r status.Report
	cfg, err := config.Load(path)
	if err != nil {
		return r, err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := admin.Call(cctx, cfg.Admin.Socket, command.Request{ID: fmt.Sprintf("cli-%d", time.Now().UnixNano()), Name: command.StatusReport})
	if err != nil {
		return r, err
	}
	if resp.Status != command.Successful {
		return r, fmt.Errorf("%s: %s", resp.Status, resp.Detail)
	}
	b, err := json.Marshal(resp.Data)
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil {
		return r, fmt.Errorf("the daemon's status answer does not decode (is the CLI older than the daemon?): %w", err)
	}
	return r, nil
}
