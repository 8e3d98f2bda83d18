package mqttagent

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/hl7edge/hl7edge/device/atomicfile"
)

// The session counter lets a fleet tell a stale Last Will (from an earlier
// run) from the current one, so it must only ever grow, even across power
// cuts: it is written to a temporary file, synced, renamed over the old one,
// and the directory synced.

// parseSession reads the counter as the file holds it: a decimal number and
// an optional newline.
func parseSession(b []byte) (uint64, error) {
	s := strings.TrimSpace(string(b))
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		q := strconv.QuoteToASCII(s)
		if len(q) > 40 {
			q = q[:40] + "…"
		}
		return 0, fmt.Errorf("holds %s, not a session counter (a decimal number)", q)
	}
	return n, nil
}

// nextSession increments the counter in path (a missing file counts as 0)
// and returns the new value once it is durably on disk.
func nextSession(path string) (uint64, error) {
	var n uint64
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		n, err = parseSession(b)
		if err != nil {
			return 0, fmt.Errorf("mqtt session file %s %w; remove it to start counting again (fleet tools then see session 1)", path, err)
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return 0, fmt.Errorf("mqtt session file: %w", err)
	}
	if n == math.MaxUint64 {
		return 0, fmt.Errorf("mqtt session file %s holds the largest counter; remove it to start counting again", path)
	}
	n++
	if err := atomicfile.Write(path, []byte(strconv.FormatUint(n, 10)+"\n"), 0o600); err != nil {
		return 0, fmt.Errorf("mqtt session file: %w", err)
	}
	return n, nil
}
