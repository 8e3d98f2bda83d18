package main

import (
	"flag"
	"io"
	"slices"
	"testing"
)

// TestParseAnyOrder: flags are taken before and after the positional
// arguments; "--" keeps what follows as arguments.
func TestParseAnyOrder(t *testing.T) {
	for _, c := range []struct {
		args []string
		pos  []string
		cfg  string
		wait bool
	}{
		{[]string{"--config", "a.yaml", "new.yaml"}, []string{"new.yaml"}, "a.yaml", false},
		{[]string{"new.yaml", "--config", "a.yaml", "--wait"}, []string{"new.yaml"}, "a.yaml", true},
		{[]string{"x", "--wait", "y"}, []string{"x", "y"}, "", true},
		{[]string{"--wait", "--", "--config"}, []string{"--config"}, "", true},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg := fs.String("config", "", "")
		wait := fs.Bool("wait", false, "")
		pos, err := parseAnyOrder(fs, c.args)
		if err != nil || !slices.Equal(pos, c.pos) || *cfg != c.cfg || *wait != c.wait {
			t.Errorf("%q: positional %q config %q wait %v (%v); want %q %q %v", c.args, pos, *cfg, *wait, err, c.pos, c.cfg, c.wait)
		}
	}
}
