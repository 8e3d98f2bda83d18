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
	"github.com/hl7edge/hl7edge/storage/syncgate"
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
// and returns the new value once it is durably on disk, its syncs through
// gates.
func nextSession(gates *syncgate.Gates, path string) (uint64, error) {
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
	data := []byte(strconv.FormatUint(n, 10) + "\n")
	err = atomicfile.Write(gates, path, data, 0o600)
	if errors.Is(err, syncgate.ErrFailedSince) {
		// Another writer's flush failed while this one was written: the
		// old counter stays, and one more write, begun after the failure,
		// is told the truth about its own.
		err = atomicfile.Write(gates, path, data, 0o600)
	}
	if errors.Is(err, syncgate.ErrFailedSince) {
		return 0, fmt.Errorf("mqtt session file: %w; disk syncs on the card failed twice while it was written: check the storage health (docs/power-loss.md)", err)
	}
	if err != nil {
		return 0, fmt.Errorf("mqtt session file: %w", err)
	}
	return n, nil
}
