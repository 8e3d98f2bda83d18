package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/device/trust"
)

// cmdCommand is the operator's side of signed commands: it runs on the
// operator's machine, where the secret key is, and prints the envelope to
// publish on hl7edge/<device>/cmd/req.
func cmdCommand(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "sign" {
		return errors.New("usage: hl7edge command sign --key FILE --device ID [--expires 15m] [--id ID] NAME [ARGS_JSON]")
	}
	fs := flag.NewFlagSet("command sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "minisign secret key file (minisign -G)")
	pwFile := fs.String("password-file", "", "file holding the secret key's password (default: ask on the terminal)")
	device := fs.String("device", "", "the gateway's device.id; the command is valid for it alone")
	id := fs.String("id", "", "command id (default: random); a gateway obeys each id once")
	expires := fs.Duration("expires", 15*time.Minute, "how long the command stays valid (at most 24h)")
	if err := fs.Parse(args[1:]); err != nil {
		return errors.New("bad arguments")
	}
	if *keyFile == "" || *device == "" || fs.NArg() < 1 || fs.NArg() > 2 {
		return errors.New("usage: hl7edge command sign --key FILE --device ID [--expires 15m] [--id ID] NAME [ARGS_JSON]")
	}
	if *expires <= 0 || *expires > trust.MaxValidity {
		return fmt.Errorf("--expires %s: use a duration above 0 and at most %s", *expires, trust.MaxValidity)
	}
	var rawArgs json.RawMessage
	if fs.NArg() == 2 {
		rawArgs = json.RawMessage(fs.Arg(1))
		var obj map[string]any
		if err := json.Unmarshal(rawArgs, &obj); err != nil {
			return fmt.Errorf("ARGS_JSON is not a JSON object: %w", err)
		}
	}
	if *id == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		*id = "signed-" + hex.EncodeToString(b[:])
	}
	signer, err := trust.LoadSigner(*keyFile, func() (string, error) { return password(*pwFile, stderr) })
	if err != nil {
		return err
	}
	exp := time.Now().Add(*expires).UTC().Truncate(time.Second)
	in := trust.Inner{Request: command.Request{ID: *id, Name: fs.Arg(0), Args: rawArgs, Expires: &exp}, Device: *device}
	comment := fmt.Sprintf("hl7edge command %s %s for %s until %s", *id, fs.Arg(0), *device, exp.Format(time.RFC3339))
	env, err := trust.Seal(in, func(m []byte) ([]byte, error) { return signer.Sign(m, comment), nil })
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, string(env))
	return nil
}

func password(file string, stderr io.Writer) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("password file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	tty, err := os.Open("/dev/tty")
	if err != nil {
		return "", errors.New("no terminal to ask the password on; pass --password-file")
	}
	defer tty.Close()
	fmt.Fprint(stderr, "Password: ")
	b, err := term.ReadPassword(int(tty.Fd()))
	fmt.Fprintln(stderr)
	return string(b), err
}
