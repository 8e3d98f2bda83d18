package config

import (
	"errors"
	"strings"
	"testing"
)

// TestYAMLSyntaxMistakesAtTheirLine: an indentation mistake is reported at
// the line that holds it, in words that say what to do, with yaml's own
// words kept after them; the parser alone named the line above for a list
// item indented by one space (issue 28, point 8).
func TestYAMLSyntaxMistakesAtTheirLine(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		line       int
		words      string
	}{
		{"list item indented by one", "device: {board: sim}\nsources:\n- name: lab\n  type: mllp\n  listen: \"127.0.0.1:2575\"\n - name: lab2\n", 6, "indentation"},
		{"key indented more than its neighbours", "spool:\n  dir: /x\n   max_bytes: 64MiB\n", 3, "indented more"},
		{"a tab", "spool:\n\tdir: /x\n", 2, "tab"},
	} {
		_, err := Parse([]byte(c.yaml))
		var ms Mistakes
		if !errors.As(err, &ms) || len(ms) != 1 {
			t.Errorf("%s: %v, want one mistake", c.name, err)
			continue
		}
		if ms[0].Line != c.line || !strings.Contains(ms[0].Msg, c.words) || !strings.Contains(ms[0].Msg, "yaml:") {
			t.Errorf("%s: %q at line %d, want line %d with %q and yaml's own words", c.name, ms[0].Msg, ms[0].Line, c.line, c.words)
		}
	}
}
