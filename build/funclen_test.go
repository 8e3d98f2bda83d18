package build

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// maxFuncLines is the longest a function of shipped code may be. Past it a
// body does several jobs, and the reader has to find the seams the author
// did not cut.
const maxFuncLines = 100

// longFuncs are the functions still over the limit, each waiting to be
// split by whoever owns its package. The list may only shrink: the test
// fails when one of them is split and still listed, so the entry goes with
// the fix.
var longFuncs = map[string]bool{}

// TestFunctionLength fails on any function or method outside tests that is
// longer than maxFuncLines, counted from its func line to its closing brace.
func TestFunctionLength(t *testing.T) {
	root := ".."
	fset := token.NewFileSet()
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if skipDir(root, path, d) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
			if n <= maxFuncLines {
				continue
			}
			key := filepath.ToSlash(rel) + " " + fd.Name.Name
			found = append(found, key)
			if !longFuncs[key] {
				t.Errorf("%s is %d lines; split it to %d or fewer (one job per function)", key, n, maxFuncLines)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for key := range longFuncs {
		if !slices.Contains(found, key) {
			t.Errorf("%s is no longer over %d lines (or is gone); remove it from longFuncs", key, maxFuncLines)
		}
	}
}
