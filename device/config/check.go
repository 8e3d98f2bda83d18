package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"gopkg.in/yaml.v3"
)

// ServiceUser is the account the packaged systemd unit runs the daemon as.
const ServiceUser = "hl7edge"

// Check reads a file as `hl7edge config check` does: every mistake of
// Load, each with its line and key path, and every file a *_file key names
// that is missing or that the service user could not read. It returns the
// configuration when there is no mistake.
func Check(path string) (*Config, Mistakes) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, Mistakes{{Msg: fmt.Sprintf("read configuration: %v", err)}}
	}
	c, err := Parse(b)
	var ms Mistakes
	if err != nil {
		var ok bool
		if ms, ok = asMistakes(err); !ok {
			ms = Mistakes{{Msg: err.Error()}} // a YAML syntax error, with its line
		}
	}
	var doc yaml.Node
	if yaml.Unmarshal(b, &doc) == nil {
		reader := serviceReader()
		for _, k := range indexKeys(&doc).keys {
			if !strings.HasSuffix(k.leaf, "_file") || k.value == "" {
				continue
			}
			if msg := reader.check(k.value); msg != "" && !mentioned(ms, k.value) {
				ms = append(ms, Mistake{Line: k.line, Path: k.path, Msg: msg})
			}
		}
	}
	if len(ms) > 0 {
		slices.SortStableFunc(ms, func(a, b Mistake) int {
			if a.Line == 0 || b.Line == 0 {
				return b.Line - a.Line
			}
			return a.Line - b.Line
		})
		return nil, ms
	}
	c.Path = path
	return c, nil
}

// mentioned says whether a mistake already names path (a component's own
// check found the file missing).
func mentioned(ms Mistakes, path string) bool {
	for _, m := range ms {
		if strings.Contains(m.Msg, path) {
			return true
		}
	}
	return false
}

// reader is whose read permission a file check judges: the service user
// when it exists on this machine, else whoever runs the check.
type reader struct {
	name string
	uid  int
	gids []int
	self bool // no service user: try opening the file instead
}

func serviceReader() reader {
	u, err := user.Lookup(ServiceUser)
	if err != nil {
		return reader{self: true}
	}
	r := reader{name: u.Username}
	r.uid, _ = strconv.Atoi(u.Uid)
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.Atoi(g); err == nil {
				r.gids = append(r.gids, n)
			}
		}
	}
	return r
}

// check says what is wrong with path for the reader ("" when nothing).
func (r reader) check(path string) string {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("file %s does not exist: create it or correct the path", path)
	case err != nil:
		return fmt.Sprintf("file %s: %v", path, errors.Unwrap(err))
	case fi.IsDir():
		return fmt.Sprintf("%s is a directory: name the file", path)
	}
	if r.self {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Sprintf("file %s cannot be read: %v", path, errors.Unwrap(err))
		}
		_ = f.Close()
		return ""
	}
	// Every directory on the way must let the user through, and the file
	// must let it read.
	abs, _ := filepath.Abs(path)
	for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
		if di, err := os.Stat(dir); err == nil && !r.may(di, 0o1) {
			return fmt.Sprintf("file %s cannot be reached by the %s user: directory %s (mode %04o) does not let it through", path, r.name, dir, di.Mode().Perm())
		}
		if dir == "/" {
			break
		}
	}
	if !r.may(fi, 0o4) {
		return fmt.Sprintf("file %s (mode %04o) cannot be read by the %s user: chown root:%s and chmod 0640 it", path, fi.Mode().Perm(), r.name, r.name)
	}
	return ""
}

// may says whether the reader has permission bit (4 read, 1 search) on fi.
func (r reader) may(fi fs.FileInfo, bit fs.FileMode) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	mode := fi.Mode().Perm()
	switch {
	case r.uid == 0:
		return true
	case int(st.Uid) == r.uid:
		return mode&(bit<<6) != 0
	case slices.Contains(r.gids, int(st.Gid)):
		return mode&(bit<<3) != 0
	}
	return mode&bit != 0
}
