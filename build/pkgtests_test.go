package build

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// minTestedLines is the size from which a package must carry its own tests:
// past it there is enough behaviour that a change can break it unnoticed
// when only the packages that import it are tested.
const minTestedLines = 100

// untested are the packages of minTestedLines or more that still have no
// tests, each waiting for whoever owns it. The list may only shrink: the
// test fails when one of them gains tests and is still listed, so the
// entry goes with the tests.
var untested = map[string]bool{}

// goPackage is what TestPackagesHaveTests learns of one directory.
type goPackage struct {
	lines  int  // lines of non-test .go files
	tested bool // a _test.go file declares a Test, Fuzz or Example function
}

// TestPackagesHaveTests fails on any package whose shipped code is
// minTestedLines lines or more and that has no test of its own.
func TestPackagesHaveTests(t *testing.T) {
	pkgs, err := scanPackages("..")
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 20 {
		t.Fatalf("found %d Go packages; the check needs the whole module", len(pkgs))
	}
	var missing []string
	for _, dir := range slices.Sorted(maps.Keys(pkgs)) {
		p := pkgs[dir]
		if p.lines < minTestedLines || p.tested {
			continue
		}
		missing = append(missing, dir)
		if !untested[dir] {
			t.Errorf("%s has %d lines of Go and no tests; add a _test.go beside it with a Test function that exercises its behaviour (packages of %d lines or more carry their own tests)", dir, p.lines, minTestedLines)
		}
	}
	for dir := range untested {
		if !slices.Contains(missing, dir) {
			t.Errorf("%s has tests now (or is gone or under %d lines); remove it from untested", dir, minTestedLines)
		}
	}
}

// scanPackages maps each directory under root that holds Go files, by its
// slash path relative to root, to its size and whether it has tests.
func scanPackages(root string) (map[string]*goPackage, error) {
	pkgs := map[string]*goPackage{}
	fset := token.NewFileSet()
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
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		dir := filepath.ToSlash(rel)
		p := pkgs[dir]
		if p == nil {
			p = &goPackage{}
			pkgs[dir] = p
		}
		if !strings.HasSuffix(name, "_test.go") {
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			p.lines += bytes.Count(src, []byte("\n"))
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		if declaresTest(f) {
			p.tested = true
		}
		return nil
	})
	return pkgs, err
}

// declaresTest reports whether f holds a function go test runs: a helper
// file alone does not test anything.
func declaresTest(f *ast.File) bool {
	for _, decl := range f.Decls {
		fd, ok := decl.(*ast.FuncDecl)
		if !ok || fd.Recv != nil || fd.Name.Name == "TestMain" {
			continue
		}
		for _, prefix := range []string{"Test", "Fuzz", "Example"} {
			if strings.HasPrefix(fd.Name.Name, prefix) {
				return true
			}
		}
	}
	return false
}
