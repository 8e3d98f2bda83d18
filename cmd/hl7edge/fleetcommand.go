package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetcmd"
	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetview"
	"github.com/hl7edge/hl7edge/device/trust"
)

const fleetCommandUsage = "usage: hl7edge fleet command NAME [ARGS_JSON] --broker URL --select site=north [--key FILE] [--timeout 10s] [--json]"

// cmdFleetCommand sends one command to every selected gateway and prints
// one row per box: its answer, its refusal, no answer, or skipped
// (offline). Exit 0 when every selected online box answered successfully.
func cmdFleetCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fleet command", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conn := brokerFlags(fs)
	selText := fs.String("select", "", "the gateways: site=north,ring=canary or id=gw1,id=gw2 (required; \"all\" for every one)")
	keyFile := fs.String("key", "", "minisign secret key: sign the command for each box (privileged commands need it)")
	pwFile := fs.String("key-password-file", "", "file holding the secret key's password (default: ask on the terminal)")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for each box's answer")
	asJSON := fs.Bool("json", false, "print the rows as JSON")
	pos, err := parseAnyOrder(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) < 1 || len(pos) > 2 || *selText == "" || *timeout <= 0 {
		fmt.Fprintln(stderr, fleetCommandUsage)
		return 2
	}
	plan := fleetcmd.Plan{Name: pos[0], Timeout: *timeout}
	if len(pos) == 2 {
		var obj map[string]any
		if err := json.Unmarshal([]byte(pos[1]), &obj); err != nil {
			fmt.Fprintf(stderr, "hl7edge fleet command: ARGS_JSON is not a JSON object: %v\n", err)
			return 2
		}
		plan.Args = json.RawMessage(pos[1])
	}
	sel, err := selectorArg(*selText)
	if err != nil {
		fmt.Fprintf(stderr, "hl7edge fleet command: %v\n", err)
		return 2
	}
	if *keyFile != "" {
		s, err := trust.LoadSigner(*keyFile, func() (string, error) { return password(*pwFile, stderr) })
		if err != nil {
			fmt.Fprintf(stderr, "hl7edge fleet command: %v\n", err)
			return 1
		}
		plan.Sign = fleetcmd.MinisignSigner(s)
	}
	r, code := conn.open(ctx, "hl7edge fleet command", stderr)
	if r == nil {
		return code
	}
	defer r.Close()
	link, err := fleetcmd.Open(ctx, r.Client(), conn.c.TopicRoot)
	if err != nil {
		fmt.Fprintf(stderr, "hl7edge fleet command: %v\n", err)
		return 1
	}
	online, offline := splitOnline(sel.Filter(r.View.Rows()))
	if len(online)+len(offline) == 0 {
		fmt.Fprintf(stderr, "hl7edge fleet command: --select %s matches no gateway on the broker; see them with hl7edge fleet\n", *selText)
		return 1
	}
	res := link.Run(ctx, plan, online, offline)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	} else {
		fleetcmd.Render(stdout, plan.Name, res)
	}
	for _, x := range res {
		if x.Outcome != fleetcmd.Answered && x.Outcome != fleetcmd.Skipped {
			return 1
		}
	}
	return 0
}

// selectorArg reads --select; "all" selects every gateway, so that acting
// on the whole fleet is said, never the default of a forgotten flag.
func selectorArg(s string) (fleetview.Selector, error) {
	if s == "all" {
		return fleetview.Selector{}, nil
	}
	sel, err := fleetview.ParseSelector(s)
	if err == nil && len(sel) == 0 {
		err = fmt.Errorf("--select is empty; name the gateways (site=north) or say all")
	}
	return sel, err
}

// splitOnline gives the selected boxes' ids, online and offline, each sorted.
func splitOnline(rows []fleetview.Row) (online, offline []string) {
	for _, r := range rows {
		if r.Online {
			online = append(online, r.ID)
		} else {
			offline = append(offline, r.ID)
		}
	}
	slices.Sort(online)
	slices.Sort(offline)
	return online, offline
}
