package build

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// skipDir says whether a walk of the repository's own Go code leaves out
// the directory at path: hidden ones, test data, other people's packages
// (vendor, node_modules) and any directory holding its own go.mod, which is
// another module kept here, such as the patched ristretto under
// storage/third_party.
func skipDir(root, path string, d fs.DirEntry) bool {
	if path == root {
		return false
	}
	name := d.Name()
	if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") ||
		name == "testdata" || name == "vendor" || name == "node_modules" {
		return true
	}
	_, err := os.Stat(filepath.Join(path, "go.mod"))
	return err == nil
}
