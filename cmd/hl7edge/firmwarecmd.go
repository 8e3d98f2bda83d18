package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/device/firmware"
)

const firmwareUsage = `usage:
  hl7edge firmware args --url URL --version V [--allow-downgrade] IMAGE
                                                     firmware-update args for IMAGE and IMAGE.minisig
  hl7edge firmware state [--config FILE]              the gateway's firmware state file`

// cmdFirmware: `args` runs on the operator's machine and prints the
// firmware-update arguments for a signed image (to pass to command sign);
// `state` shows a gateway's state file.
func cmdFirmware(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(firmwareUsage)
	}
	switch args[0] {
	case "args":
		fs := flag.NewFlagSet("firmware args", flag.ContinueOnError)
		fs.SetOutput(stderr)
		url := fs.String("url", "", "https URL the gateway downloads the image from")
		ver := fs.String("version", "", "the image's version (what `IMAGE version` prints)")
		down := fs.Bool("allow-downgrade", false, "let the gateway install it over a newer running version (a roll-back on purpose)")
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 1 || *url == "" || *ver == "" {
			return errors.New(firmwareUsage)
		}
		a, err := imageArgs(fs.Arg(0), *url, *ver, *down)
		if err != nil {
			return err
		}
		b, err := json.Marshal(a)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(b))
		return nil
	case "state":
		fs := flag.NewFlagSet("firmware state", flag.ContinueOnError)
		fs.SetOutput(stderr)
		path := fs.String("config", config.DefaultPath, "configuration file")
		if err := fs.Parse(args[1:]); err != nil {
			return errors.New(firmwareUsage)
		}
		cfg, err := config.Load(*path)
		if err != nil {
			return err
		}
		st, ok, err := firmware.Load(cfg.Firmware.Dir)
		if err != nil {
			return err
		}
		if !ok {
			fmt.Fprintf(stdout, "never updated: the installed version %s runs\n", version)
			return nil
		}
		b, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	return errors.New(firmwareUsage)
}

// imageArgs are the firmware-update arguments for image and its
// .minisig: the SHA-256 computed here, the signature as minisign wrote it.
func imageArgs(image, url, ver string, down bool) (firmware.Args, error) {
	f, err := os.Open(image)
	if err != nil {
		return firmware.Args{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return firmware.Args{}, err
	}
	sig, err := os.ReadFile(image + ".minisig")
	if err != nil {
		return firmware.Args{}, fmt.Errorf("%w (sign the image first: minisign -S -s KEY -m %s)", err, image)
	}
	return firmware.Args{URL: url, Version: ver, SHA256: hex.EncodeToString(h.Sum(nil)), Minisig: string(sig), AllowDowngrade: down}, nil
}
