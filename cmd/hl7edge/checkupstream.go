package main

import (
	"context"
	"fmt"
	"io"
)

func cmdCheckUpstream(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	_ = ctx
	_ = args
	_ = stdout
	fmt.Fprintln(stderr, "check-upstream: not built yet")
	return 1
}
