// Package demo is `hl7edge demo`: the whole flow on loopback with built-in
// defaults. It starts a reference web service over HTTPS with a throw-away
// CA, the gateway with an MLLP port and a virtual serial port (a kernel
// pty), sends sample messages through both, shows them arriving upstream
// with the GUIDs the gateway gave them, and prints what to try next.
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Options of one demo run.
type Options struct {
	Dir     string    // working directory; "" makes a new temporary one
	Port    int       // MLLP port; a free one is chosen when it is taken or 0
	Once    bool      // stop after the samples arrive instead of waiting for ctx
	Version string    // shown in the banner and given to the gateway
	Stdout  io.Writer // the story: ACKs, arrivals, LED changes, what to try
	Stderr  io.Writer // the gateway's log
}

// Run runs the demo until ctx ends (or, with Once, until the samples have
// arrived), then stops everything it started.
func Run(ctx context.Context, o Options) error {
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "hl7edge-demo-*")
		if err != nil {
			return fmt.Errorf("demo directory: %w", err)
		}
		o.Dir = d
	}
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return fmt.Errorf("demo directory: %w", err)
	}
	say := func(f string, a ...any) { fmt.Fprintf(o.Stdout, f+"\n", a...) }
	say("hl7edge %s demo in %s", o.Version, o.Dir)

	ws, err := startWebService(o.Dir)
	if err != nil {
		return err
	}
	defer ws.close()
	say("  reference web service  %s/hl7/ping  (stores into %s)", ws.url, ws.store)

	line, err := openSerial(o.Dir)
	if err != nil {
		return err
	}
	defer line.close()

	mllpAddr, err := mllpAddress(o.Port)
	if err != nil {
		return err
	}
	cfgText := strings.NewReplacer("{{DIR}}", o.Dir, "{{MLLP}}", mllpAddr, "{{URL}}", ws.url).Replace(configTemplate)
	cfgPath := filepath.Join(o.Dir, "hl7edge.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return fmt.Errorf("demo configuration: %w", err)
	}
	say("  gateway                MLLP on %s, serial on %s, config %s", mllpAddr, line.path, cfgPath)
	say("  LEDs (sim board)       what each LED means, printed below whenever that changes\n")

	gctx, stop := context.WithCancel(ctx)
	defer stop()
	done, err := startGateway(gctx, stop, o, cfgPath)
	if err != nil {
		return err
	}
	if err := sendSamples(ctx, say, mllpAddr, line); err != nil {
		stop()
		<-done
		return err
	}
	if err := showArrivals(say, o.Dir, ws.store); err != nil {
		stop()
		<-done
		return err
	}
	say(`
try next:
  bin/hl7edge status --config %s
  bin/hl7edge send --to %s your-messages.hl7
  bin/hl7edge spool stats --config %s
  bin/hl7edge spool stats --config %s --json
  ls %s
Ctrl-C stops the demo.`, cfgPath, mllpAddr, cfgPath, cfgPath, ws.store)
	if !o.Once {
		select {
		case <-ctx.Done():
		case err := <-done:
			return err
		}
	}
	stop()
	return <-done
}
