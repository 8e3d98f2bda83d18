package route

import (
	"errors"
	"fmt"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
)

// Match is the match: block of a destination in the configuration.
type Match struct {
	All []string `yaml:"all"` // every rule must hold
	Any []string `yaml:"any"` // at least one rule must hold (when any are given)
}

// Validate reports every rule that does not compile.
func (m Match) Validate() error {
	_, err := Compile(m)
	return err
}

// Matcher is a compiled Match. A nil or empty Matcher matches every message.
type Matcher struct {
	all, any []Rule
}

// Compile compiles every rule of m, reporting all mistakes at once, each
// with its place in the configuration (match.all[1]).
func Compile(m Match) (*Matcher, error) {
	var errs []error
	compile := func(key string, texts []string) []Rule {
		rules := make([]Rule, 0, len(texts))
		for i, t := range texts {
			r, err := ParseRule(t)
			if err != nil {
				errs = append(errs, fmt.Errorf("match.%s[%d]: %w", key, i, err))
				continue
			}
			rules = append(rules, r)
		}
		return rules
	}
	mt := &Matcher{all: compile("all", m.All), any: compile("any", m.Any)}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return mt, nil
}

// Empty reports whether the matcher has no rules and so matches everything.
// A configuration check should refuse it on a rubbish bin, which would then
// eat every message.
func (mt *Matcher) Empty() bool { return mt == nil || len(mt.all) == 0 && len(mt.any) == 0 }

// Match reports whether m satisfies every all rule and, when there are any
// rules, at least one of them.
func (mt *Matcher) Match(m *hl7.Message) bool {
	if mt == nil {
		return true
	}
	for _, r := range mt.all {
		if !r.Holds(m) {
			return false
		}
	}
	if len(mt.any) == 0 {
		return true
	}
	for _, r := range mt.any {
		if r.Holds(m) {
			return true
		}
	}
	return false
}
