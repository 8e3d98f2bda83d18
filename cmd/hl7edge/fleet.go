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
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c mqttagent.Config
	fs.StringVar(&c.Broker, "broker", "", "broker URL: tls://host:8883 (also ssl://, wss://, tcp://, ws://)")
	fs.StringVar(&c.Username, "username", "", "broker user name")
	fs.StringVar(&c.PasswordFile, "password-file", "", "file holding the broker password")
	fs.StringVar(&c.CAFile, "ca-file", "", "CA certificate (PEM) added to the system roots")
	fs.StringVar(&c.CertFile, "cert-file", "", "client certificate (PEM), with --key-file")
	fs.StringVar(&c.KeyFile, "key-file", "", "client key (PEM)")
	fs.StringVar(&c.TopicRoot, "topic-root", mqttagent.DefaultTopicRoot, "the gateways' mqtt.topic_root")
	clientID := fs.String("client-id", "", "MQTT client ID (default hl7edge-fleet-<random>)")
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
	if c.Broker == "" {
		fmt.Fprintln(stderr, "hl7edge fleet: --broker URL is required (the gateways' mqtt.broker)")
		return 2
	}
	r, err := fleetview.Open(ctx, fleetview.Options{MQTT: c, ClientID: *clientID})
	if err != nil {
		fmt.Fprintf(stderr, "hl7edge fleet: %v\n", err)
		return 1
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
