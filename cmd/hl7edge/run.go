package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/device/firmware"
)

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath, "configuration file")
	if err := fs.Parse(args); err != nil {
		return errors.New("bad arguments")
	}
	// The installed binary is the launcher: a committed or trial image in
	// firmware.dir replaces this process here (and does not come back).
	if cfg, err := config.Load(*path); err == nil {
		firmware.Launch(cfg.Firmware.Dir, version, slog.New(slog.NewTextHandler(stderr, nil)).With("component", "launcher"))
	}
	return appliance.Run(ctx, appliance.Options{ConfigPath: *path, Version: version, LogOut: stderr, StateDir: stateDirectory()})
}

// exitRelaunch is the exit status of a firmware switch (EX_TEMPFAIL): the
// unit restarts on it (RestartForceExitStatus=75) and the restarted
// installed binary launches the image the firmware state names.
const exitRelaunch = 75

// stateDirectory is the one systemd made for StateDirectory= (the unit's
// first, when it names several), or "" outside systemd.
func stateDirectory() string {
	d, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":")
	return d
}
