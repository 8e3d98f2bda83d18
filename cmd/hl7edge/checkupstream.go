package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
	"github.com/hl7edge/hl7edge/pipeline/webservice"
	"github.com/hl7edge/hl7edge/pipeline/webservice/conformance"
)

// cmdCheckUpstream runs the protocol against a customer's web service and
// prints a conformance table. It exits 1 when any check fails.
func cmdCheckUpstream(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c conformance.Config
	fs.StringVar(&c.URL, "url", "", "the ping URL")
	fs.StringVar(&c.LogonID, "logon", "", "logon id")
	fs.StringVar(&c.PasswordFile, "password-file", "", "file holding the password")
	fs.StringVar(&c.CAFile, "ca", "", "extra CA certificates (PEM) on top of the system roots")
	fs.StringVar(&c.CertFile, "cert", "", "client certificate for mutual TLS")
	fs.StringVar(&c.KeyFile, "key", "", "client key for mutual TLS")
	hosts := fs.String("allowed-hosts", "", "comma-separated host patterns the post URL must match")
	fs.BoolVar(&c.AllowInsecureHTTP, "allow-insecure-http", false, "report plain HTTP as a warning, not a failure")
	fs.DurationVar(&c.Timeout, "timeout", 30*time.Second, "per request")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if c.URL == "" || c.LogonID == "" || c.PasswordFile == "" {
		fmt.Fprintln(stderr, "usage: hl7edge check-upstream --url URL --logon ID --password-file F [--ca FILE]")
		return 2
	}
	if *hosts != "" {
		c.AllowedHosts = strings.Split(*hosts, ",")
	}
	c.PMVersion = webservice.FormatPMVersion(version)
	r := conformance.Check(ctx, c)
	if _, err := r.WriteTo(stdout); err != nil {
		return 1
	}
	if !r.OK() {
		why := "this service does not follow the protocol hl7edge speaks"
		if r.Cause != "" {
			why = r.Cause
		}
		fmt.Fprintf(stdout, "\n%s failed: %s\n", units.Count(r.Count(conformance.Fail), "check", "checks"), why)
		return 1
	}
	fmt.Fprintln(stdout, "\nall checks passed")
	return 0
}
