package main

import "flag"

// parseAnyOrder parses args with fs letting flags come after the
// positional arguments too, as people type them (`hl7edge pause lis
// --config F`), and returns the positional arguments. The standard flag
// package stops at the first one, which turned the flags after it into
// more positional arguments and the command into a usage error. "--" ends
// the flags as usual.
func parseAnyOrder(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}
