package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/hl7edge/hl7edge/device/config"
)

func cmdConfig(args []string, stdout io.Writer) error {
	if len(args) != 2 || args[0] != "check" {
		return errors.New("usage: hl7edge config check FILE")
	}
	c, err := config.Load(args[1])
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: OK (device %s, %d sources, %d destinations)\n", args[1], c.Device.ID, len(c.Sources), len(c.Destinations))
	return nil
}
