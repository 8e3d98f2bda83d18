// Command hl7edge is the gateway's one binary: the daemon, its tools and the
// reference web service. main only parses the command line and wires
// packages together; behaviour lives in the packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/hl7edge/hl7edge/device/appliance"
)

// version is stamped at build time (-ldflags "-X main.version=...").
var version = "dev"

// defaultMemoryLimit is the Go heap's soft limit. Badger's compactions
// allocate in bursts; without a limit the collector lets the heap double
// before it runs and the process keeps pages it no longer needs, which a
// 1 GB gateway cannot afford. GOMEMLIMIT in the environment overrides it.
//
// What stays live under full ingest is small (about 7 MiB plus the
// memtables) since Badger's table builders stopped being pooled
// (storage/third_party/ristretto/PATCHES.md), so the limit only paces the
// collector through the bursts. BenchmarkIngest (16 connections, 100,000
// lab results queued), three runs each, alternating: 38 MiB gave peak RSS
// 56.7-58.9 MiB at 14.3-14.8k msgs/s, 40 MiB 57.5-60.6 MiB at 12.9-14.8k;
// 36 MiB cost 8% of the throughput and a millisecond of p99.
const defaultMemoryLimit = 38 << 20

func main() {
	// Everything hl7edge writes (spool, messages, firmware, session) is
	// for its own user: patient data and code. The systemd unit sets the
	// same umask; this holds when it is started any other way.
	syscall.Umask(0o077)
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `hl7edge — HL7 v2 gateway firmware

usage:
  hl7edge run --config FILE            the daemon
  hl7edge demo                         the whole flow on loopback with built-in defaults
  hl7edge send --to HOST:PORT [--tls] [--ca FILE] [--cert FILE --key FILE] [--server-name NAME] FILE...
                                       send HL7 files over MLLP; exit 1 unless every ACK is AA/CA
  hl7edge status [--config FILE] [--json]
                                       the running gateway in words: what is wrong, what to do,
                                       what each LED means; exit 0 healthy, 1 not, 2 unknown
  hl7edge fleet --broker URL [--username U --password-file F] [--ca-file F] [--cert-file F --key-file F]
         [--topic-root hl7edge] [--client-id ID] [--select site=north,ring=canary] [--watch [--every 2s]] [--json]
                                       every gateway on the broker in one table, worst first
                                       (--select: only those; the broker flags are the same for
                                       fleet command and fleet update)
  hl7edge fleet command NAME [ARGS_JSON] --broker URL --select site=north|all [--key FILE] [--timeout 10s] [--json]
                                       one command to every selected gateway, one row per box
  hl7edge fleet update --broker URL --image FILE --version V --url URL --key FILE --select site=north|all
         [--waves 1,5%,25%,100%] [--max-failures 2%] [--deadline 15m] [--state FILE] [--dry-run] | --resume STATE
                                       a firmware rollout in waves, canary boxes first; it stops
                                       when failures pass the threshold and resumes from its state file
  hl7edge spool stats --config FILE [--json]
  hl7edge spool salvage --config FILE [--json]
                                       copy what is readable of a spool that cannot be
                                       opened into a fresh one (daemon stopped)
  hl7edge spool dead list|retry|purge --config FILE --destination NAME [--guid G]...
  hl7edge spool skip --config FILE --destination NAME --reason TEXT
                                       move the message a destination is held by (or keeps
                                       failing on) to its dead letters, so the rest flow
  hl7edge spool undeliverable list|retry|purge --config FILE [--guid G]...
                                       messages no rule matched: list, route again by the
                                       current rules (retry), delete
  hl7edge pause|resume NAME [--config FILE]
                                       hold a source or destination (its queue grows), or undo it
  hl7edge reping NAME [--config FILE]  a web-service destination pings before its next post, now
  hl7edge identify [--seconds 30] [--config FILE]
                                       blink all four LEDs to find the box in a rack
  hl7edge logs [--follow] [--level L] [--component C] [--lines 100] [--config FILE]
                                       the daemon's last log lines (no message content)
  hl7edge trace ID | --since T [--until T] [--source S] [--dest D] [--type T] [--state S] [--limit N] [--config FILE] [--json]
                                       where messages went (by GUID or control ID, or over a time range)
  hl7edge replay --to DEST --since T [--until T] [--source S] [--type T] [--dry-run] [--partial] [--config FILE] [--json]
                                       send retained delivered messages again, under new GUIDs
  hl7edge webservice --listen ADDR --store DIR [--mailbox DIR] [--tls-cert F --tls-key F]
                     [--logon ID --password-file F]
                                       the reference web service (ping/post and mailbox)
  hl7edge check-upstream --url URL --logon ID --password-file F [--ca FILE]
                                       test a web service against the protocol
  hl7edge config check FILE
  hl7edge config apply [--config FILE] [--grace 60s] [--wait] NEWFILE
                                       apply a configuration to the running daemon (local operator);
                                       --wait: until kept (exit 0) or rolled back (exit 1, why)
  hl7edge config sample [SECTION|TYPE|all]
                                       a block's (spool, mqtt, log, leds, board, trust, firmware...)
                                       or a source or destination type's keys and defaults; all: every one
  hl7edge command sign --key FILE --device ID [--expires 15m] [--id ID] NAME [ARGS_JSON]
                                       sign a command for MQTT with a minisign secret key (operators)
  hl7edge firmware args --url URL --version V [--allow-downgrade] IMAGE
                                       firmware-update args for IMAGE and IMAGE.minisig (operators)
  hl7edge firmware state [--config FILE]
                                       the gateway's firmware state file
  hl7edge selftest                     spool and MLLP round trip on this machine
  hl7edge version
`

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "run":
		err = cmdRun(ctx, rest, stderr)
	case "demo":
		err = cmdDemo(ctx, rest, stdout, stderr)
	case "send":
		return cmdSend(ctx, rest, stdout, stderr)
	case "status":
		return cmdStatus(ctx, rest, stdout, stderr)
	case "fleet":
		return cmdFleet(ctx, rest, stdout, stderr)
	case "spool":
		err = cmdSpool(ctx, rest, stdout)
	case "pause", "resume", "reping", "identify":
		err = cmdBox(ctx, cmd, rest, stdout)
	case "logs":
		err = cmdLogs(ctx, rest, stdout, stderr)
	case "trace":
		err = cmdTrace(ctx, rest, stdout)
	case "replay":
		err = cmdReplay(ctx, rest, stdout)
	case "webservice":
		err = cmdWebservice(ctx, rest, stdout, stderr)
	case "check-upstream":
		return cmdCheckUpstream(ctx, rest, stdout, stderr)
	case "config":
		err = cmdConfig(rest, stdout)
	case "command":
		err = cmdCommand(rest, stdout, stderr)
	case "firmware":
		err = cmdFirmware(rest, stdout, stderr)
	case "selftest":
		err = cmdSelftest(ctx, stdout)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "hl7edge", version)
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "hl7edge: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if errors.Is(err, appliance.ErrRelaunch) {
		// Run has logged the switch as a record; a plain line here would
		// be the one line of the journal outside slog.
		return exitRelaunch
	}
	if err != nil {
		// run logs its own last error as a record of its log.
		if le := (*appliance.LoggedError)(nil); !errors.As(err, &le) {
			fmt.Fprintf(stderr, "hl7edge %s: %v\n", cmd, err)
		}
		return 1
	}
	return 0
}
