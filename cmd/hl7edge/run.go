package main

import (
	"context"
	"errors"
	"flag"
	"io"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/config"
)

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath, "configuration file")
	if err := fs.Parse(args); err != nil {
		return errors.New("bad arguments")
	}
	return appliance.Run(ctx, appliance.Options{ConfigPath: *path, Version: version, LogOut: stderr})
}
