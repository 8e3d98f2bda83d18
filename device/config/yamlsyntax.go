package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// syntaxMistake turns yaml's syntax error into a Mistake. yaml.v3 names the
// line where its parser gave up, which for an indentation mistake is often
// the line above the one that holds it, and in words about its grammar
// ("did not find expected key"). When the file's indentation shows a
// mistake, the Mistake is at that line and says what to do; yaml's words
// follow either way.
func syntaxMistake(b []byte, err error) Mistakes {
	words := strings.TrimPrefix(tidyYAMLError(err).Error(), "yaml: ")
	line := 0
	if m := yamlLine.FindStringSubmatch(words); m != nil {
		line, _ = strconv.Atoi(m[1])
		words = strings.TrimPrefix(words, m[0])
	}
	// The indentation is trusted only near where yaml gave up: a file may
	// hold shapes the reading below does not know (a plain scalar folded
	// over lines) far from the real mistake.
	if l, what := indentMistake(string(b)); l > 0 && (line == 0 || l >= line-2 && l <= line+2) {
		return Mistakes{{Line: l, Msg: fmt.Sprintf("%s (yaml: %s)", what, words)}}
	}
	return Mistakes{{Line: line, Msg: fmt.Sprintf("yaml: %s; check the indentation (spaces only, each key under the one it belongs to) and the quoting on this line and the one above", words)}}
}

var yamlLine = regexp.MustCompile(`^line (\d+): `)

// quoted and comment strip what cannot hold structure from a line.
var (
	quoted  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'[^']*'`)
	comment = regexp.MustCompile(`(^|\s)#.*$`)
	scalar  = regexp.MustCompile(`[|>][-+0-9]*$`)
)

// indentMistake finds the first line whose indentation fits no block of the
// lines above it, as a person reads a YAML file: a tab, a line indented
// deeper than one that opens nothing, or one that comes back to a column
// no enclosing block starts at. It returns 0 when it sees none.
func indentMistake(text string) (int, string) {
	levels := []int{0} // columns where an open block's keys or items start
	prev, opens, depth := -1, false, 0
	inScalar, scalarAt := false, 0
	for i, raw := range strings.Split(text, "\n") {
		body := strings.TrimLeft(raw, " ")
		indent := len(raw) - len(body)
		if strings.HasPrefix(body, "\t") {
			return i + 1, "a tab in the indentation: YAML indents with spaces only"
		}
		if inScalar && (body == "" || indent > scalarAt) {
			continue // a block scalar's text
		}
		inScalar = false
		code := strings.TrimSpace(comment.ReplaceAllString(quoted.ReplaceAllString(body, `""`), ""))
		if code == "" {
			continue
		}
		if depth == 0 && prev >= 0 {
			switch {
			case indent > prev && !opens && !slices.Contains(levels, indent):
				return i + 1, fmt.Sprintf("indented more than the line above (%s, not %d), which opens no block: align it with its neighbours, or end the line above with ':'", spaces(indent), prev)
			case indent > prev && !slices.Contains(levels, indent):
				levels = append(levels, indent)
			case indent < prev:
				open := slices.Clone(levels)
				for len(levels) > 1 && levels[len(levels)-1] > indent {
					levels = levels[:len(levels)-1]
				}
				if levels[len(levels)-1] != indent {
					return i + 1, fmt.Sprintf("indentation of %s matches no block above it (%s): align it with the key or '- ' it belongs to", spaces(indent), columns(open))
				}
			}
		}
		depth += strings.Count(code, "[") + strings.Count(code, "{") - strings.Count(code, "]") - strings.Count(code, "}")
		depth = max(depth, 0)
		if depth > 0 {
			continue
		}
		prev, opens = indent, strings.HasSuffix(code, ":") || code == "-"
		if scalar.MatchString(code) {
			inScalar, scalarAt = true, indent
		}
		if item := strings.TrimPrefix(code, "- "); item != code {
			// The keys of a list item start after its dash.
			at := indent + len(body) - len(strings.TrimLeft(strings.TrimPrefix(body, "-"), " "))
			if !slices.Contains(levels, at) {
				levels = append(levels, at)
			}
		}
	}
	return 0, ""
}

func spaces(n int) string {
	if n == 1 {
		return "1 space"
	}
	return strconv.Itoa(n) + " spaces"
}

// columns lists the indentations a line may have, as spaces.
func columns(levels []int) string {
	parts := make([]string, len(levels))
	for i, l := range levels {
		parts[i] = strconv.Itoa(l)
	}
	return "use " + strings.Join(parts, " or ") + " spaces"
}
