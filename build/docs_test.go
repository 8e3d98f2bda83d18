package build

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// mdSection is one "## " section of a Markdown page: the first cell of
// every table row, keyed by the table's first header cell, and the names of
// its "### `name`" headings. Backticks are stripped.
type mdSection struct {
	tables   map[string][]string
	headings []string
}

// readMarkdown splits a page into its "## " sections, keyed by the heading
// text up to the first colon ("## alarm: events" is "alarm").
func readMarkdown(t *testing.T, path string) map[string]*mdSection {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]*mdSection{}
	cur := &mdSection{tables: map[string][]string{}}
	header := "" // first header cell of the table being read; "" outside a table
	inTable := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "## "):
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "## "), ":")
			cur = &mdSection{tables: map[string][]string{}}
			out[strings.TrimSpace(name)] = cur
			inTable = false
		case strings.HasPrefix(line, "### "):
			cur.headings = append(cur.headings, strings.Trim(strings.TrimPrefix(line, "### "), "` "))
			inTable = false
		case strings.HasPrefix(line, "|"):
			cells := strings.Split(strings.Trim(line, "|"), "|")
			first := strings.TrimSpace(cells[0])
			switch {
			case !inTable:
				header, inTable = first, true
			case strings.HasPrefix(first, "---"):
			default:
				cur.tables[header] = append(cur.tables[header], strings.Trim(first, "`"))
			}
		default:
			inTable = false
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// stringConsts returns the values of the package-level string constants in
// dir's non-test files whose name has prefix (any name when prefix is "")
// and, when untyped, that carry no type. It reads the source, so a
// constant added anywhere in the package is seen.
func stringConsts(t *testing.T, dir, prefix string, untyped bool) []string {
	t.Helper()
	fset := token.NewFileSet()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			g, ok := decl.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				if untyped && vs.Type != nil {
					continue
				}
				for i, id := range vs.Names {
					if !strings.HasPrefix(id.Name, prefix) || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// jsonNames lists the JSON field names of a struct type, recursively
// through nested structs, slices and pointers.
func jsonNames(t reflect.Type, seen map[string]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.PkgPath() == "time" {
		return
	}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		seen[name] = true
		jsonNames(f.Type, seen)
	}
}

func setOf(list []string) map[string]bool {
	m := map[string]bool{}
	for _, s := range list {
		m[s] = true
	}
	return m
}

// sameSet reports, once per name, what the code has and the page lacks,
// and what the page names and the code does not have.
func sameSet(t *testing.T, what, where string, code, doc map[string]bool) {
	t.Helper()
	if len(code) == 0 {
		t.Errorf("%s: found none in the code; the test no longer reads the right place", what)
	}
	var missing, unknown []string
	for n := range code {
		if !doc[n] {
			missing = append(missing, n)
		}
	}
	for n := range doc {
		if !code[n] {
			unknown = append(unknown, n)
		}
	}
	slices.Sort(missing)
	slices.Sort(unknown)
	if len(missing) > 0 {
		t.Errorf("%s %q exist in the code but docs/mqtt-api.md does not document them in %s: fleet operators cannot know what they mean; add a row", what, missing, where)
	}
	if len(unknown) > 0 {
		t.Errorf("docs/mqtt-api.md documents %s %q in %s that the code does not have: remove them, or restore the constant (a published name must not change)", what, unknown, where)
	}
}

// TestMQTTAPIDoc keeps docs/mqtt-api.md, the fleet's contract, in step with
// the names the code publishes: every alarm kind, counter, command, command
// status and JSON field, and nothing else.
func TestMQTTAPIDoc(t *testing.T) {
	doc := readMarkdown(t, "../docs/mqtt-api.md")
	section := func(name string) *mdSection {
		s, ok := doc[name]
		if !ok {
			t.Fatalf("docs/mqtt-api.md has no \"## %s\" section", name)
		}
		return s
	}
	alarms, counters, snap, cmds := section("alarm"), section("Health counters"), section("health"), section("cmd/req and cmd/res")

	sameSet(t, "alarm kinds", `"## alarm" (table "kind")`,
		setOf(slices.Concat(stringConsts(t, "../pipeline/vocab/health", "Alarm", false),
			stringConsts(t, "../device/appliance", "Alarm", false), stringConsts(t, "../device/firmware", "Alarm", false),
			stringConsts(t, "../device/cardwatch", "Alarm", false))),
		setOf(alarms.tables["kind"]))
	sameSet(t, "health counters", `"## Health counters" (table "counter")`,
		setOf(stringConsts(t, "../pipeline/vocab/health", "Counter", false)), setOf(counters.tables["counter"]))
	sameSet(t, "commands", `"## cmd/req and cmd/res" ("### `+"`name`"+`" headings)`,
		setOf(stringConsts(t, "../device/command", "", true)), setOf(cmds.headings))

	statuses := map[string]bool{}
	for _, s := range []command.Status{command.Accepted, command.Successful, command.Failed, command.Rejected} {
		statuses[string(s)] = true
	}
	sameSet(t, "command statuses", `"## cmd/req and cmd/res" (table "status")`, statuses, setOf(cmds.tables["status"]))

	req := map[string]bool{}
	jsonNames(reflect.TypeFor[command.Request](), req)
	sameSet(t, "command request fields", `"## cmd/req and cmd/res" (table "field")`, req, setOf(cmds.tables["field"]))

	fields := map[string]bool{}
	jsonNames(reflect.TypeFor[health.Snapshot](), fields)
	sameSet(t, "health snapshot fields", `"## health" (tables "field")`, fields, setOf(snap.tables["field"]))
}

// TestNoNameLiterals keeps the vocabulary in one place: shipped code raises
// alarms, adds counters, reads counters and registers commands through the
// constants that TestMQTTAPIDoc checks against the page, never through a
// string literal that would escape it.
func TestNoNameLiterals(t *testing.T) {
	// A health counter is added with a count (1, n, uint64(...)); that
	// second argument tells it from http.Header.Add or url.Values.Add.
	literal := regexp.MustCompile(`(\.Add|\.Count)\("[^"]*", *([0-9]|uint64\(|n\b)|([aA]larm|\.Register|\.RegisterPrivileged)\("|Counters\["`)
	checked := 0
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && skipDir("..", path, d) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		for i, line := range strings.Split(string(b), "\n") {
			if literal.MatchString(line) {
				t.Errorf("%s:%d: %s\n\tuse the constant from pipeline/vocab/health (alarms.go, counters.go), device/appliance, device/firmware or device/cardwatch (alarms.go) or device/command (names.go), so docs/mqtt-api.md stays the whole list", path, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("read %d .go files; the check needs the whole module", checked)
	}
}

// TestCitedDocumentsExist fails when a .go file (tests included) names a
// Markdown document the repository does not hold: a reader who clones the
// repository must be able to open every document the code points to. A
// path counts when it exists from the repository root or from the citing
// file's directory. The relative links of the README and of every page
// under docs/ are held to the same rule (checkMarkdownLinks).
func TestCitedDocumentsExist(t *testing.T) {
	checkMarkdownLinks(t, "..")
	cite := regexp.MustCompile(`[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b`)
	root := ".."
	cited := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && skipDir(root, path, d) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, doc := range cite.FindAllString(line, -1) {
				cited++
				if fileExists(filepath.Join(root, doc)) || fileExists(filepath.Join(filepath.Dir(path), doc)) {
					continue
				}
				t.Errorf("%s:%d cites %s, which the repository does not hold: cite a document under docs/ (or README.md), or add the document", path, i+1, doc)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if cited == 0 {
		t.Fatal("no .go file cites a document; the scan does not read the repository")
	}
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}

// mdLink is a Markdown inline link's target: [text](target).
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// checkMarkdownLinks fails for every relative link in README.md,
// docs/*.md and the rigs' build/*/README.md that does not lead to a file in the repository, read from the
// linking page's directory as a Markdown viewer reads it. A #fragment is
// dropped; links with a scheme (https:, mailto:) are not the repository's.
func checkMarkdownLinks(t *testing.T, root string) {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	rigs, err := filepath.Glob(filepath.Join(root, "build", "*", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	pages = append(append(pages, rigs...), filepath.Join(root, "README.md"))
	links := 0
	for _, page := range pages {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
				target, _, _ := strings.Cut(m[1], "#")
				if target == "" || strings.Contains(target, ":") {
					continue
				}
				links++
				if !fileExists(filepath.Join(filepath.Dir(page), target)) {
					t.Errorf("%s:%d links to %s, which is not a file of the repository (the path is read from %s): correct the link, or add the document", page, i+1, m[1], filepath.Dir(page))
				}
			}
		}
	}
	if links == 0 {
		t.Fatal("README.md and docs/*.md hold no relative link; the scan does not read them")
	}
}

// TestDocExamplesMatchGoldens: an example in the README or docs/ that is
// marked `<!-- golden: PATH -->` is, in the indented block that follows,
// exactly what the code prints (PATH is a golden file its test keeps), so
// the documents cannot drift from the screens they show.
func TestDocExamplesMatchGoldens(t *testing.T) {
	docs, _ := filepath.Glob("../docs/*.md")
	checked := 0
	for _, doc := range append(docs, "../README.md") {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for i, l := range lines {
			path, ok := strings.CutPrefix(strings.TrimSpace(l), "<!-- golden: ")
			if !ok {
				continue
			}
			path = strings.TrimSuffix(path, " -->")
			want, err := os.ReadFile(filepath.Join("..", path))
			if err != nil {
				t.Errorf("%s:%d: %v", doc, i+1, err)
				continue
			}
			var got []string
			for _, e := range lines[i+1:] {
				if e != "" && !strings.HasPrefix(e, "    ") {
					break
				}
				got = append(got, strings.TrimPrefix(e, "    "))
			}
			if g := strings.TrimRight(strings.Join(got, "\n"), "\n"); g != strings.TrimRight(string(want), "\n") {
				t.Errorf("%s:%d: the example differs from %s (copy it again, indented by four spaces)", doc, i+1, path)
			}
			checked++
		}
	}
	if checked < 2 {
		t.Fatalf("%d examples marked with a golden file; docs/operations.md has two", checked)
	}
}
