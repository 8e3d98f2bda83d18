package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/device/admin"
	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/command"

	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/device/samples"
	"github.com/hl7edge/hl7edge/pipeline/gateway"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

const configUsage = "usage: hl7edge config check FILE | hl7edge config sample [SECTION|TYPE|all] | hl7edge config apply [--config FILE] [--grace 60s] [--wait] NEWFILE"

func cmdConfig(args []string, stdout io.Writer) error {
	switch {
	case len(args) == 2 && args[0] == "check":
		c, mistakes := config.Check(args[1])
		if len(mistakes) > 0 {
			for _, m := range mistakes {
				fmt.Fprintf(stdout, "%s: %s\n", args[1], m)
			}
			return fmt.Errorf("%s: %s", args[1], units.Count(len(mistakes), "mistake", "mistakes"))
		}
		fmt.Fprintf(stdout, "%s: OK (device %s, %s, %s)\n", args[1], c.Device.ID,
			units.Count(len(c.Sources), "source", "sources"), units.Count(len(c.Destinations), "destination", "destinations"))
		for _, w := range c.SecretWarnings() {
			fmt.Fprintf(stdout, "warning: %s\n", w)
		}
		if b, err := os.ReadFile(args[1]); err == nil {
			for _, n := range sizeNotes(b) {
				fmt.Fprintf(stdout, "note: %s\n", n)
			}
		}
		return nil
	case len(args) >= 1 && len(args) <= 2 && args[0] == "sample":
		return configSample(args[1:], stdout)
	case len(args) >= 2 && args[0] == "apply":
		return configApply(args[1:], stdout)
	}
	return errors.New(configUsage)
}

// configSample prints the commented sample of a block of the file
// (spool, mqtt...), of a source or destination type (both, when the type
// is both and they differ), of everything (all), or lists them. The samples
// are compiled in, so a gateway without the source tree has them; the
// package also installs them under /usr/share/doc/hl7edge/samples.
func configSample(args []string, stdout io.Writer) error {
	types := gateway.DefaultTypes()
	var sections []string
	for _, s := range samples.Sections() {
		sections = append(sections, s.Names...)
	}
	if len(args) == 0 {
		fmt.Fprintf(stdout, "sections:          %s\nsource types:      %s\ndestination types: %s\n"+
			"(hl7edge config sample NAME prints one's keys and defaults; hl7edge config sample all prints every one)\n",
			strings.Join(sections, ", "), strings.Join(types.SourceTypes(), ", "), strings.Join(types.DestinationTypes(), ", "))
		return nil
	}
	var printed [][]byte
	emit := func(b []byte) {
		if containsBytes(printed, b) {
			return
		}
		if len(printed) > 0 {
			fmt.Fprintln(stdout)
		}
		_, _ = stdout.Write(b)
		printed = append(printed, b)
	}
	all := args[0] == "all"
	for _, s := range samples.Sections() {
		if all || slices.Contains(s.Names, args[0]) {
			emit(s.YAML)
		}
	}
	for _, s := range types.Samples() {
		if all || s.Type == args[0] {
			emit(s.YAML)
		}
	}
	if len(printed) == 0 {
		return fmt.Errorf("no section or type %q: the sections are %s; the types %s (sources) and %s (destinations); or all", args[0],
			strings.Join(sections, ", "), strings.Join(types.SourceTypes(), ", "), strings.Join(types.DestinationTypes(), ", "))
	}
	return nil
}

func containsBytes(list [][]byte, b []byte) bool {
	for _, x := range list {
		if bytes.Equal(x, b) {
			return true
		}
	}
	return false
}

// configApply sends config-apply to the running daemon through the admin
// socket: the local operator's way, the only one that may lower transport
// security (plain HTTP, wider allowed_hosts, new upstream hosts). The
// daemon validates, restarts and rolls back an unhealthy configuration as
// for MQTT. With --wait it also waits for that outcome, so that a script
// (or a person) learns of a roll-back from the exit code.
func configApply(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("config apply", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", config.DefaultPath, "the running daemon's configuration file (names the admin socket)")
	grace := fs.Duration("grace", 0, "how long the new configuration has to prove healthy (default 60s)")
	wait := fs.Bool("wait", false, "wait until the configuration is kept or rolled back; exit 1 with the reason when rolled back")
	pos, err := parseAnyOrder(fs, args)
	if err != nil || len(pos) != 1 {
		return errors.New(configUsage)
	}
	cur, err := config.Load(*path)
	if err != nil {
		return err
	}
	next, err := os.ReadFile(pos[0])
	if err != nil {
		return fmt.Errorf("read the new configuration: %w", err)
	}
	a := map[string]string{"yaml": string(next)}
	if *grace > 0 {
		a["grace"] = grace.String()
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	id := fmt.Sprintf("cli-%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := admin.Call(ctx, cur.Admin.Socket, command.Request{ID: id, Name: command.ConfigApply, Args: b})
	if err != nil {
		return err
	}
	if resp.Status != command.Successful {
		return fmt.Errorf("config-apply %s: %s", resp.Status, resp.Detail)
	}
	fmt.Fprintf(stdout, "%s\n", resp.Detail)
	if !*wait {
		return nil
	}
	sockets := []string{cur.Admin.Socket}
	if nc, err := config.Parse(next); err == nil && nc.Admin.Socket != cur.Admin.Socket {
		sockets = append(sockets, nc.Admin.Socket)
	}
	return awaitApply(id, sockets, cmp.Or(*grace, time.Minute), stdout)
}

// awaitApply asks the daemon what became of the configuration applied by
// command id until it is kept or rolled back. The daemon restarts its
// pipeline meanwhile, so its socket may be gone for a moment, and the
// configuration it runs (the new one, or the old one again) decides which
// socket answers.
func awaitApply(id string, sockets []string, grace time.Duration, stdout io.Writer) error {
	limit := grace + 2*time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	args, _ := json.Marshal(map[string]string{"id": id})
	for {
		for _, sock := range sockets {
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := admin.Call(cctx, sock, command.Request{ID: id + "-result", Name: command.ConfigApplyResult, Args: args})
			ccancel()
			if err != nil || resp.Status != command.Successful {
				continue
			}
			var o appliance.ApplyOutcome
			if b, err := json.Marshal(resp.Data); err != nil || json.Unmarshal(b, &o) != nil {
				continue
			}
			switch o.State {
			case appliance.ApplyOnTrial:
			case appliance.ApplyKept:
				fmt.Fprintln(stdout, o.Detail)
				return nil
			default:
				return fmt.Errorf("%s (%s; hl7edge status shows the alarm)", o.Detail, o.State)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no outcome for command %s within %s: see hl7edge status and the journal", id, limit)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// sizeValue finds a size written with a decimal (SI) unit, or with a bare
// K, M or G, in one line of YAML: "key: 64MB".
var sizeValue = regexp.MustCompile(`(?i)([a-z_]+):\s*["']?(\d+(?:\.\d+)?)\s*(kb|mb|gb|tb|k|m|g)["']?\s*(?:[,}#]|$)`)

// sizeNotes says what each size written in an SI unit, or with a bare
// K/M/G, means in bytes. Sizes are documented in IEC units (MiB = 2^20
// bytes); SI units are accepted and mean powers of 1000, which a reader
// of 64MB cannot tell from the file.
func sizeNotes(b []byte) []string {
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		for _, m := range sizeValue.FindAllStringSubmatch(line, -1) {
			written := m[2] + m[3]
			v, err := units.ParseSize(written)
			if err != nil {
				continue
			}
			iec := strings.ToUpper(m[3][:1]) + "iB"
			if len(m[3]) == 1 {
				out = append(out, fmt.Sprintf("line %d: %s: %s is read as %s%s (%s bytes); hl7edge sizes are IEC units, powers of 1024", i+1, m[1], written, m[2], iec, thousands(int64(v))))
				continue
			}
			alt, _ := units.ParseSize(m[2] + iec)
			out = append(out, fmt.Sprintf("line %d: %s: %s is %s bytes (SI, powers of 1000); %s%s would be %s", i+1, m[1], written, thousands(int64(v)), m[2], iec, thousands(int64(alt))))
		}
	}
	return out
}

// thousands writes n with a comma between groups of three digits.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
