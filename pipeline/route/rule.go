// Package route decides where each message goes: destinations carry
// matching rules over any segment, field, component or subcomponent, rubbish
// bins eat what they match, and a message nobody wants is reported as
// undeliverable rather than dropped.
//
// # Rules
//
// A rule reads "<SEG>-<field>[.<component>[.<sub>]] <op> [values]", for
// example "MSH-9.1 in ADT,ORU", "PV1-3.1 prefix ICU", "OBR-4 contains GLU",
// "PID-3.1 matches ^MRN[0-9]+$", "PID-19 missing". Values are
// comma-separated, except for matches, whose whole remainder is one Go
// regular expression (commas such as {1,3} belong to it).
//
// in, not-in, contains and prefix compare values the way the Postmaster
// does, ignoring case, spaces and punctuation: both sides are folded to ASCII
// lowercase letters and digits, so "ICU-North", "icu north" and "ICUNORTH"
// are one value. Folding drops every non-ASCII byte too, which keeps a rule
// written in UTF-8 YAML comparable with a message in Latin-1 (MSH-18). A
// value with nothing left after folding is refused when the rule is parsed.
// matches runs the expression case-insensitively on the raw value instead,
// for when punctuation matters. Several values mean any of them.
//
// exists holds when a value is present; missing when it is not. A value made
// only of component and subcomponent separators and spaces, or the HL7 null
// "", counts as absent: "^^^" has no data in it.
//
// # Missing and repeating segments
//
// A rule about a segment the message lacks never holds, whatever the
// operator: "PV1-3.1 not-in ICU" and "PV1-3.1 missing" are both false
// without PV1. A rule about a segment says something about that segment, and
// a message without it was not meant; write the rule the other way round
// (with any) when absence should match.
//
// When the segment repeats (several OBX), in, contains, prefix, matches and
// exists hold when any occurrence satisfies them ("some result is a
// glucose"); not-in and missing hold only when every occurrence does ("no
// result is a test value"), so that a negative rule never lets through a
// message containing the very thing it excludes.
//
// Values are read raw (see package hl7). Folding skips escape sequences
// (\F\, \T\, \.br\, ...) because they stand for delimiters and formatting,
// which comparisons ignore anyway; matches sees them as written.
package route

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
)

// Op is a rule's operator.
type Op string

// The operators a rule may use.
const (
	In       Op = "in"
	NotIn    Op = "not-in"
	Contains Op = "contains"
	Prefix   Op = "prefix"
	Matches  Op = "matches"
	Exists   Op = "exists"
	Missing  Op = "missing"
)

const (
	ruleForm = `write "<SEG>-<field>[.<component>[.<sub>]] <op> [values]", for example "MSH-9.1 in ADT,ORU" or "PV1-3.1 prefix ICU"`
	opList   = "in, not-in, contains, prefix, matches, exists, missing"
)

// Rule is one compiled matching rule. The zero Rule never holds.
type Rule struct {
	path   hl7.Path
	op     Op
	values []string // as written, trimmed; for matches the one expression
	folded []string // values folded, for in, not-in, contains, prefix
	re     *regexp.Regexp
}

// ParseRule compiles a rule (see the package documentation for the syntax).
// Operators are case-insensitive; "not-exists" is read as missing.
func ParseRule(s string) (Rule, error) {
	text := strings.TrimSpace(s)
	if text == "" {
		return Rule{}, errors.New("matching rule is empty: " + ruleForm)
	}
	pathText, rest := cutSpace(text)
	opText, valueText := cutSpace(rest)
	fail := func(format string, args ...any) (Rule, error) {
		return Rule{}, fmt.Errorf("matching rule %q: %s", text, fmt.Sprintf(format, args...))
	}
	path, err := hl7.ParsePath(pathText)
	if err != nil {
		return Rule{}, fmt.Errorf("matching rule %q: %w", text, err)
	}
	r := Rule{path: path, op: Op(strings.ToLower(opText))}
	if r.op == "not-exists" {
		r.op = Missing
	}
	switch r.op {
	case "":
		return fail("no operator after %s: use one of %s; %s", pathText, opList, ruleForm)
	case Exists, Missing:
		if valueText != "" {
			return fail("%s takes no values: write %q", r.op, path.String()+" "+string(r.op))
		}
	case Matches:
		if valueText == "" {
			return fail("matches needs a regular expression, for example \"%s matches ^A0[1-4]$\"", path)
		}
		re, err := regexp.Compile("(?i)" + valueText)
		if err != nil {
			return Rule{}, fmt.Errorf("matching rule %q: regular expression (Go syntax): %w", text, err)
		}
		r.values, r.re = []string{valueText}, re
	case In, NotIn, Contains, Prefix:
		if valueText == "" {
			return fail("%s needs comma-separated values, for example \"%s %s ADT,ORU\"", r.op, path, r.op)
		}
		for item := range strings.SplitSeq(valueText, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				return fail("empty value between commas: list values as A,B,C")
			}
			f := fold(item)
			if f == "" {
				return fail("value %q has no letters or digits, and comparisons ignore everything else (case, spaces, punctuation); use matches to test punctuation", item)
			}
			r.values = append(r.values, item)
			r.folded = append(r.folded, f)
		}
	default:
		return fail("unknown operator %q: use one of %s", opText, opList)
	}
	return r, nil
}

// cutSpace splits s at its first run of spaces or tabs.
func cutSpace(s string) (head, tail string) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i:])
}

// Path returns the field the rule reads.
func (r Rule) Path() hl7.Path { return r.path }

// Op returns the rule's operator.
func (r Rule) Op() Op { return r.op }

// String writes the rule back in the form ParseRule reads.
func (r Rule) String() string {
	if r.op == "" {
		return ""
	}
	s := r.path.String() + " " + string(r.op)
	if len(r.values) > 0 {
		s += " " + strings.Join(r.values, ",")
	}
	return s
}

// Holds reports whether m satisfies the rule.
func (r Rule) Holds(m *hl7.Message) bool {
	if r.op == "" || m == nil {
		return false
	}
	vals := m.ValuesPath(r.path)
	if len(vals) == 0 {
		return false // the segment is absent: no rule about it applies
	}
	every := r.op == NotIn || r.op == Missing
	d := m.Delimiters()
	var buf [128]byte
	for _, v := range vals {
		var ok bool
		switch r.op {
		case Exists:
			ok = !absent(v, d)
		case Missing:
			ok = absent(v, d)
		case Matches:
			ok = r.re.MatchString(v)
		default:
			f := appendFold(buf[:0], v, d.Escape)
			ok = r.compare(f)
		}
		if every && !ok {
			return false
		}
		if !every && ok {
			return true
		}
	}
	return every
}

// compare applies in, not-in, contains or prefix to a folded value.
func (r Rule) compare(f []byte) bool {
	for _, want := range r.folded {
		var hit bool
		switch r.op {
		case In, NotIn:
			hit = string(f) == want
		case Contains:
			hit = strings.Contains(string(f), want)
		case Prefix:
			hit = strings.HasPrefix(string(f), want)
		}
		if hit {
			return r.op != NotIn
		}
	}
	return r.op == NotIn
}

// absent reports whether v carries no data: empty, the HL7 null "", or
// nothing but component separators and spaces.
func absent(v string, d hl7.Delimiters) bool {
	if v == `""` {
		return true
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c != ' ' && c != d.Component && c != d.Subcomponent {
			return false
		}
	}
	return true
}

// fold keeps ASCII letters (lowercased) and digits, the Postmaster's notion
// of what a value says.
func fold(s string) string { return string(appendFold(nil, s, 0)) }

// appendFold appends the folded s to dst, skipping escape sequences opened
// by esc (0: none).
func appendFold(dst []byte, s string, esc byte) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if esc != 0 && c == esc {
			if end := strings.IndexByte(s[i+1:], esc); end >= 0 {
				i += end + 1
				continue
			}
		}
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			dst = append(dst, c)
		case c >= 'A' && c <= 'Z':
			dst = append(dst, c+('a'-'A'))
		}
	}
	return dst
}
