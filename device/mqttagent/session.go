package mqttagent

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	if err := writeFileAtomic(path, []byte(strconv.FormatUint(n, 10)+"\n")); err != nil {
		return 0, fmt.Errorf("mqtt session file: %w", err)
	}
	return n, nil
}

// writeFileAtomic replaces path so that after a crash it holds either the old
// or the new content, never a mix or nothing.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err = f.Chmod(0o600); err != nil {
		_ = f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
