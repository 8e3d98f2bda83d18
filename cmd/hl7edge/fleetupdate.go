package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetcmd"
	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/rollout"
	"github.com/hl7edge/hl7edge/device/trust"
)

const fleetUpdateUsage = `usage: hl7edge fleet update --broker URL --image FILE --version V --url URL --key FILE --select site=north|all
         [--waves 1,5%,25%,100%] [--max-failures 2%] [--deadline 15m] [--state FILE] [--dry-run]
       hl7edge fleet update --broker URL --key FILE --resume STATE`

type updateFlags struct {
	conn                                           *fleetConn
	image, version, url, key, pw, sel, waves, maxF *string
	state, resume                                  *string
	dryRun, down                                   *bool
	deadline                                       *time.Duration
}

func parseUpdateFlags(args []string, stderr io.Writer) (*updateFlags, error) {
	fs := flag.NewFlagSet("fleet update", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &updateFlags{conn: brokerFlags(fs)}
	f.image = fs.String("image", "", "the signed image (IMAGE.minisig beside it)")
	f.version = fs.String("version", "", "the image's version (what `IMAGE version` prints)")
	f.url = fs.String("url", "", "https URL the boxes download the image from (your server)")
	f.key = fs.String("key", "", "minisign secret key: each box's command is signed for it")
	f.pw = fs.String("key-password-file", "", "file holding the secret key's password (default: ask on the terminal)")
	f.sel = fs.String("select", "", "the gateways: site=north,ring=canary or id=gw1,id=gw2, or all")
	f.waves = fs.String("waves", "1,5%,25%,100%", "how far each wave reaches: counts or shares of the boxes, the last 100%")
	f.maxF = fs.String("max-failures", "2%", "failures (count or share of the boxes) the rollout goes on with; one more stops it")
	f.deadline = fs.Duration("deadline", 15*time.Minute, "per wave: a box with no outcome by then has failed")
	f.state = fs.String("state", "", "state file (default hl7edge-rollout-VERSION.json)")
	f.resume = fs.String("resume", "", "continue the rollout in this state file")
	f.dryRun = fs.Bool("dry-run", false, "print the waves and send nothing")
	f.down = fs.Bool("allow-downgrade", false, "let boxes install it over a newer running version")
	if _, err := parseAnyOrder(fs, args); err != nil {
		return nil, err
	}
	if *f.resume == "" && (*f.image == "" || *f.version == "" || *f.url == "" || *f.sel == "" || *f.key == "" && !*f.dryRun) ||
		*f.resume != "" && *f.key == "" || *f.deadline <= 0 {
		return nil, errors.New(fleetUpdateUsage)
	}
	if *f.state == "" {
		*f.state = "hl7edge-rollout-" + *f.version + ".json"
	}
	if *f.resume != "" {
		*f.state = *f.resume
	}
	return f, nil
}

// cmdFleetUpdate rolls a firmware image out in waves (internal/rollout).
// Exit 0 when every wave is over within the threshold, 1 when it stopped.
func cmdFleetUpdate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	f, err := parseUpdateFlags(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	st, code := f.loadOrPlan(ctx, stdout, stderr)
	if st == nil || *f.dryRun {
		return code
	}
	if err := f.run(ctx, st, stdout, stderr); err != nil {
		if !errors.Is(err, rollout.ErrStopped) {
			fmt.Fprintf(stderr, "hl7edge fleet update: %v\n", err)
		}
		return 1
	}
	return 0
}

// loadOrPlan reads the state to resume, or plans a new rollout from what
// the broker says of the fleet and writes its state file.
func (f *updateFlags) loadOrPlan(ctx context.Context, stdout, stderr io.Writer) (*rollout.State, int) {
	if *f.resume != "" {
		st, err := rollout.Load(*f.resume)
		if err != nil {
			fmt.Fprintf(stderr, "hl7edge fleet update: %v\n", err)
			return nil, 1
		}
		if st.Stopped != "" {
			st.Forgiven += st.Failures()
			fmt.Fprintf(stdout, "resuming a rollout that %s; its failed boxes stay as they are and the threshold counts from here\n", st.Stopped)
			st.Stopped = ""
		}
		return st, 0
	}
	sel, err := selectorArg(*f.sel)
	if err != nil {
		fmt.Fprintf(stderr, "hl7edge fleet update: %v\n", err)
		return nil, 2
	}
	a, err := imageArgs(*f.image, *f.url, *f.version, *f.down)
	if err != nil {
		fmt.Fprintf(stderr, "hl7edge fleet update: image: %v\n", err)
		return nil, 1
	}
	r, code := f.conn.open(ctx, "hl7edge fleet update", stderr)
	if r == nil {
		return nil, code
	}
	rows := sel.Filter(r.View.Rows())
	r.Close()
	if len(rows) == 0 {
		fmt.Fprintf(stderr, "hl7edge fleet update: --select %s matches no gateway on the broker; see them with hl7edge fleet\n", *f.sel)
		return nil, 1
	}
	st, err := rollout.Plan(rows, a, *f.sel, *f.waves, *f.maxF)
	if err != nil {
		fmt.Fprintf(stderr, "hl7edge fleet update: %v\n", err)
		return nil, 2
	}
	printPlan(stdout, st)
	if *f.dryRun {
		return st, 0
	}
	if _, err := os.Stat(*f.state); err == nil {
		fmt.Fprintf(stderr, "hl7edge fleet update: state file %s exists: continue that rollout with --resume %s, or name another with --state\n", *f.state, *f.state)
		return nil, 1
	}
	if err := st.Save(*f.state); err != nil {
		fmt.Fprintf(stderr, "hl7edge fleet update: state file: %v\n", err)
		return nil, 1
	}
	return st, 0
}

func (f *updateFlags) run(ctx context.Context, st *rollout.State, stdout, stderr io.Writer) error {
	s, err := trust.LoadSigner(*f.key, func() (string, error) { return password(*f.pw, stderr) })
	if err != nil {
		return err
	}
	r, code := f.conn.open(ctx, "hl7edge fleet update", stderr)
	if r == nil {
		return fmt.Errorf("broker (exit %d)", code)
	}
	defer r.Close()
	link, err := fleetcmd.Open(ctx, r.Client(), f.conn.c.TopicRoot)
	if err != nil {
		return err
	}
	run := &rollout.Runner{Link: link, Sign: fleetcmd.MinisignSigner(s), StatePath: *f.state, Deadline: *f.deadline, Out: stdout}
	if err := run.Watch(ctx, r.Client(), f.conn.c.TopicRoot); err != nil {
		return err
	}
	return run.Run(ctx, st)
}

// printPlan shows the waves (the first boxes of each) and the boxes left out.
func printPlan(w io.Writer, st *rollout.State) {
	fmt.Fprintf(w, "rollout of %s to %s in %d waves; it stops when more than %d fail (--max-failures %s)\n",
		st.Args.Version, rollout.Count(len(st.Boxes), "box", "boxes"), st.Waves, st.MaxFailures, st.MaxSpec)
	for wv := 1; wv <= st.Waves; wv++ {
		var ids []string
		for _, i := range st.Wave(wv) {
			ids = append(ids, st.Boxes[i].ID)
		}
		fmt.Fprintf(w, "  wave %d: %s: %s\n", wv, rollout.Count(len(ids), "box", "boxes"), short(ids))
	}
	for _, kind := range []string{rollout.Skipped, rollout.Done} {
		var ids []string
		for _, b := range st.Boxes {
			if b.Status == kind {
				ids = append(ids, b.ID)
			}
		}
		if len(ids) > 0 {
			fmt.Fprintf(w, "  %s (%s): %s: %s\n", kind, st.Boxes[indexOf(st, ids[0])].Reason, rollout.Count(len(ids), "box", "boxes"), short(ids))
		}
	}
}

func indexOf(st *rollout.State, id string) int {
	for i, b := range st.Boxes {
		if b.ID == id {
			return i
		}
	}
	return 0
}

// short lists up to ten ids and says how many more.
func short(ids []string) string {
	if len(ids) <= 10 {
		return strings.Join(ids, " ")
	}
	return strings.Join(ids[:10], " ") + fmt.Sprintf(" (+%d more)", len(ids)-10)
}
