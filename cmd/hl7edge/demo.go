package main

import (
	"context"
	"errors"
	"flag"
	"io"

	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/demo"
)

// cmdDemo parses the demo's flags; the demo itself is its own package.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "working directory (default: a new temporary one)")
	port := fs.Int("port", 2575, "MLLP port (a free one is chosen if it is taken)")
	once := fs.Bool("once", false, "exit after the samples arrive instead of waiting for Ctrl-C")
	if err := fs.Parse(args); err != nil {
		return errors.New("bad arguments")
	}
	return demo.Run(ctx, demo.Options{Dir: *dir, Port: *port, Once: *once, Version: version, Stdout: stdout, Stderr: stderr})
}
