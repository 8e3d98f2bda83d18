package config

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Mistake is one problem in a configuration file, where it is and what it is.
type Mistake struct {
	Line int    // 0 when the key is not in the file (a default, a missing key)
	Path string // the key path, like spool.max_bytes or sources[0].listen; "" when unknown
	Msg  string
}

func (m Mistake) String() string {
	var b strings.Builder
	if m.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", m.Line)
	}
	if m.Path != "" && !strings.Contains(m.Msg, m.Path) {
		b.WriteString(m.Path + ": ")
	}
	b.WriteString(m.Msg)
	return b.String()
}

// Mistakes is every mistake of one file, in line order; as an error it
// reads one mistake per line.
type Mistakes []Mistake

func (ms Mistakes) Error() string {
	lines := make([]string, len(ms))
	for i, m := range ms {
		lines[i] = m.String()
	}
	return strings.Join(lines, "\n")
}

// keyAt is one key of the file: its path and the line it is on.
type keyAt struct {
	path  string // sources[0].listen
	leaf  string // listen
	line  int
	value string // a scalar's value, "" otherwise
}

// keyIndex knows where every key of a file is, so that a message from any
// component's validation (which knows keys, not lines) can be placed. It
// is built from the YAML alone and knows nothing of the components.
type keyIndex struct {
	keys  []keyAt
	items map[int]string // line of a list item -> its path (sources[0])
}

func indexKeys(doc *yaml.Node) *keyIndex {
	ix := &keyIndex{items: map[int]string{}}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				ka := keyAt{path: p, leaf: k.Value, line: k.Line}
				if v.Kind == yaml.ScalarNode {
					ka.value = v.Value
				}
				ix.keys = append(ix.keys, ka)
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if _, ok := ix.items[c.Line]; !ok && c.Kind == yaml.MappingNode {
					ix.items[c.Line] = p
				}
				walk(c, p)
			}
		}
	}
	walk(doc, "")
	// Longest paths first, so spool.max_bytes wins over spool.
	slices.SortStableFunc(ix.keys, func(a, b keyAt) int { return len(b.path) - len(a.path) })
	return ix
}

var linePrefix = regexp.MustCompile(`^line (\d+): `)

// place finds the line and key path of one message. A message that names
// its line ("line 7: ...") gets the key on that line, narrowed to the key
// the message names when several share the line or the line starts a list
// item; one that names a key path ("spool.max_bytes 1MiB is below ...")
// gets that key's line.
func (ix *keyIndex) place(msg string) Mistake {
	m := Mistake{Msg: msg}
	if sm := linePrefix.FindStringSubmatch(msg); sm != nil {
		m.Line, _ = strconv.Atoi(sm[1])
		m.Msg = msg[len(sm[0]):]
		scope := ""
		if item, ok := ix.items[m.Line]; ok {
			scope = item // a list item: the key may be on a later line
		}
		var onLine []keyAt
		for _, k := range ix.keys {
			if k.line == m.Line || (scope != "" && strings.HasPrefix(k.path, scope+".") && !strings.Contains(k.path[len(scope)+1:], ".")) {
				onLine = append(onLine, k)
			}
		}
		for _, k := range onLine {
			if mentions(m.Msg, k.leaf) {
				m.Line, m.Path = k.line, k.path
				return m
			}
		}
		switch {
		case scope != "":
			m.Path = scope
		case len(onLine) == 1:
			m.Path = onLine[0].path
		}
		return m
	}
	for _, k := range ix.keys {
		if strings.Contains(k.path, ".") && mentions(msg, k.path) {
			m.Line, m.Path = k.line, k.path
			return m
		}
	}
	return m
}

// mentions says whether msg names key as a word of its own (listen, not
// the listen in "listener").
func mentions(msg, key string) bool {
	for i := 0; ; {
		j := strings.Index(msg[i:], key)
		if j < 0 {
			return false
		}
		j += i
		end := j + len(key)
		before := j == 0 || !isKeyChar(msg[j-1])
		after := end == len(msg) || !isKeyChar(msg[end])
		if before && after {
			return true
		}
		i = j + 1
	}
}

func isKeyChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// placeAll turns an error (one mistake per line of its text, as
// errors.Join writes them) into Mistakes in line order.
func (ix *keyIndex) placeAll(errs ...error) Mistakes {
	var out Mistakes
	seen := map[string]bool{}
	for _, err := range errs {
		if err == nil {
			continue
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || seen[line] {
				continue
			}
			seen[line] = true
			out = append(out, ix.place(line))
		}
	}
	slices.SortStableFunc(out, func(a, b Mistake) int {
		if a.Line == 0 || b.Line == 0 {
			return b.Line - a.Line // placed ones first
		}
		return a.Line - b.Line
	})
	return out
}

// asMistakes is errors.As for a Mistakes error.
func asMistakes(err error) (Mistakes, bool) {
	var ms Mistakes
	ok := errors.As(err, &ms)
	return ms, ok
}
