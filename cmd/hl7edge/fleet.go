package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetview"
	"github.com/hl7edge/hl7edge/device/mqttagent"
)

// cmdFleet prints every gateway the broker knows in one table, worst first.
// Its broker options are the daemon's mqtt section, flag for key.
func cmdFleet(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "command" {
		return cmdFleetCommand(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "update" {
		return cmdFleetUpdate(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conn := brokerFlags(fs)
	watch := fs.Bool("watch", false, "keep the table on screen, refreshed as gateways report")
	asJSON := fs.Bool("json", false, "print the rows as JSON")
	every := fs.Duration("every", 2*time.Second, "with --watch: least time between redraws")
	selText := fs.String("select", "", "only the gateways with these labels: site=north,ring=canary (id=gw1,id=gw2 by device.id)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	sel, err := fleetview.ParseSelector(*selText)
	if err != nil {
		fmt.Fprintf(stderr, "hl7edge fleet: %v\n", err)
		return 2
	}
	r, code := conn.open(ctx, "hl7edge fleet", stderr)
	if r == nil {
		return code
	}
	defer r.Close()
	show := func() {
		rows := sel.Filter(r.View.Rows())
		if *asJSON {
			enc := json.NewEncoder(stdout)
			if !*watch {
				enc.SetIndent("", "  ")
			}
			_ = enc.Encode(rows)
			return
		}
		if *watch {
			fmt.Fprint(stdout, "\x1b[H\x1b[2J") // home and clear: redraw in place
		}
		fleetview.Render(stdout, rows, time.Now())
	}
	show()
	if !*watch {
		return 0
	}
	// Redraw on a tick rather than per message: a thousand gateways'
	// health would otherwise repaint the screen many times a second, and
	// the ages move on even when nothing is published.
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0
		case <-tick.C:
			show()
		}
	}
}

// fleetConn is the broker options every fleet command shares: the
// daemon's mqtt section, flag for key.
type fleetConn struct {
	c        mqttagent.Config
	clientID *string
}

func brokerFlags(fs *flag.FlagSet) *fleetConn {
	f := &fleetConn{}
	c := &f.c
	fs.StringVar(&c.Broker, "broker", "", "broker URL: tls://host:8883 (also ssl://, wss://, tcp://, ws://)")
	fs.StringVar(&c.Username, "username", "", "broker user name")
	fs.StringVar(&c.PasswordFile, "password-file", "", "file holding the broker password")
	fs.StringVar(&c.CAFile, "ca-file", "", "CA certificate (PEM) added to the system roots")
	fs.StringVar(&c.CertFile, "cert-file", "", "client certificate (PEM), with --key-file")
	fs.StringVar(&c.KeyFile, "key-file", "", "client key (PEM)")
	fs.StringVar(&c.TopicRoot, "topic-root", mqttagent.DefaultTopicRoot, "the gateways' mqtt.topic_root")
	f.clientID = fs.String("client-id", "", "MQTT client ID (default hl7edge-fleet-<random>)")
	return f
}

// open connects and reads the fleet; on failure it says why on stderr and
// returns the exit code.
func (f *fleetConn) open(ctx context.Context, who string, stderr io.Writer) (*fleetview.Reader, int) {
	if f.c.Broker == "" {
		fmt.Fprintf(stderr, "%s: --broker URL is required (the gateways' mqtt.broker)\n", who)
		return nil, 2
	}
	r, err := fleetview.Open(ctx, fleetview.Options{MQTT: f.c, ClientID: *f.clientID})
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", who, err)
		return nil, 1
	}
	return r, 0
}
