package gateway

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/deliver"
	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/route"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
	"github.com/hl7edge/hl7edge/storage"
)

// Source is one entry of `sources:`.
type Source struct {
	Name string
	Type string
	Line int // where it starts in the file, for error messages
	// Config is the block of keys of the type (a pointer to the config
	// struct the type registered). Validate decodes it from the file; a
	// caller building a Source in code sets it.
	Config component.Config
	node   *yaml.Node // the entry as read, until Validate decodes Config from it
	bad    error      // a bad value among the common keys, reported by Validate
}

// Destination is one entry of `destinations:`.
type Destination struct {
	Name        string
	Type        string
	Line        int
	Match       route.Match
	MaxAttempts int
	MaxBackoff  units.Duration
	// OnReject is what a permanent refusal of a message does: hold the
	// destination (deliver.OnRejectHold, the default) or move the message
	// to the dead letters (deliver.OnRejectDead).
	OnReject string
	// Lanes and LaneKey: up to Lanes messages in flight at once, messages
	// with the same value at LaneKey (a field path; default PID-3.1) in
	// spool order. 0 or 1 is one message at a time in strict spool order.
	Lanes   int
	LaneKey string
	// Config is the type's block, as for Source; nil for a type with no
	// keys of its own (a rubbish bin).
	Config component.Config
	node   *yaml.Node
	bad    error
}

// Keys every source and every destination has, whatever its type.
var (
	sourceKeys = []string{"name", "type"}
	destKeys   = []string{"name", "type", "match", "max_attempts", "max_backoff", "on_reject", "lanes", "lane_key"}
)

// UnmarshalYAML reads the keys every source has and keeps the entry: which
// other keys are allowed depends on the type, and the registry of types is
// only at hand in Validate.
func (s *Source) UnmarshalYAML(n *yaml.Node) error {
	var common struct {
		Name string `yaml:"name"`
		Type string `yaml:"type"`
	}
	// A bad value (a *yaml.TypeError) leaves the rest decoded. Returning
	// it would make yaml.v3 drop the whole entry, so Validate reports it
	// and checks the entry's other keys in the same run.
	err := n.Decode(&common)
	if err != nil && !errors.As(err, new(*yaml.TypeError)) {
		return err
	}
	s.Name, s.Type, s.Line, s.node, s.bad = common.Name, common.Type, n.Line, n, err
	return nil
}

// UnmarshalYAML reads a destination like Source.UnmarshalYAML.
func (d *Destination) UnmarshalYAML(n *yaml.Node) error {
	var common struct {
		Name        string         `yaml:"name"`
		Type        string         `yaml:"type"`
		Match       route.Match    `yaml:"match"`
		MaxAttempts int            `yaml:"max_attempts"`
		MaxBackoff  units.Duration `yaml:"max_backoff"`
		OnReject    string         `yaml:"on_reject"`
		Lanes       int            `yaml:"lanes"`
		LaneKey     string         `yaml:"lane_key"`
	}
	err := n.Decode(&common)
	if err != nil && !errors.As(err, new(*yaml.TypeError)) {
		return err
	}
	d.Name, d.Type, d.Line, d.node, d.bad = common.Name, common.Type, n.Line, n, err
	d.Match, d.MaxAttempts, d.MaxBackoff = common.Match, common.MaxAttempts, common.MaxBackoff
	d.Lanes, d.LaneKey, d.OnReject = common.Lanes, common.LaneKey, common.OnReject
	return nil
}

// decodeBlock fills *cfg from the entry n when it is not set yet, refusing
// keys that neither the type nor the common keys know, each with its line.
func decodeBlock(n *yaml.Node, cfg *component.Config, fresh component.Config, common []string) []error {
	if *cfg != nil {
		return nil
	}
	*cfg = fresh
	if n == nil {
		return nil
	}
	return splitYAMLErrors(decodeTyped(n, fresh, common))
}

// splitYAMLErrors turns yaml.v3's one error for many mistakes back into
// one error each, so they read like the rest of the file's mistakes.
func splitYAMLErrors(err error) []error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		if err != nil {
			return []error{err}
		}
		return nil
	}
	out := make([]error, 0, len(te.Errors))
	for _, e := range te.Errors {
		out = append(out, errors.New(e))
	}
	return out
}

// decodeTyped decodes n into target (a pointer to a config struct, or nil
// for a type with no block) after checking that every key is known.
func decodeTyped(n *yaml.Node, target any, common []string) error {
	if n.Kind != yaml.MappingNode {
		return lineErr(n, "expected a mapping of keys")
	}
	known := slices.Clone(common)
	if target != nil {
		known = append(known, yamlKeys(reflect.TypeOf(target).Elem())...)
	}
	sub := &yaml.Node{Kind: yaml.MappingNode, Tag: n.Tag, Line: n.Line, Column: n.Column}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !slices.Contains(known, k.Value) {
			errs = append(errs, lineErr(k, "unknown key %q (known here: %s)", k.Value, strings.Join(known, ", ")))
			continue
		}
		if slices.Contains(common, k.Value) && (target == nil || !slices.Contains(yamlKeys(reflect.TypeOf(target).Elem()), k.Value)) {
			continue
		}
		sub.Content = append(sub.Content, k, n.Content[i+1])
	}
	// The known keys are decoded even beside an unknown one, so a
	// misspelt key does not also make its neighbours look missing.
	if target != nil {
		if err := sub.Decode(target); err != nil {
			if len(errs) == 0 {
				return err
			}
			errs = append(errs, splitYAMLErrors(err)...)
		}
	}
	if len(errs) > 0 {
		// A *yaml.TypeError lets the decoder carry on with the rest of the
		// file, so one run reports every mistake.
		te := &yaml.TypeError{}
		for _, e := range errs {
			te.Errors = append(te.Errors, e.Error())
		}
		return te
	}
	return nil
}

// yamlKeys lists the YAML keys of a struct type, following inline fields.
func yamlKeys(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") && f.Type.Kind() == reflect.Struct {
			out = append(out, yamlKeys(f.Type)...)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, name)
	}
	return out
}

// LineError is a configuration mistake at a line of the file.
type LineError struct {
	Line int
	Msg  string
}

func (e *LineError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

func lineErr(n *yaml.Node, f string, a ...any) error {
	return &LineError{Line: n.Line, Msg: fmt.Sprintf(f, a...)}
}

// namePattern keeps names safe in spool keys, MQTT topics and file names.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Validate decodes each entry's block for its type in types (nil:
// DefaultTypes), applies defaults and checks sources and destinations
// together: known types and keys, unique well-formed names, each block
// valid, matching rules that compile. Every mistake is reported, each with
// its line.
func Validate(types *component.Types, sources []Source, dests []Destination) error {
	if types == nil {
		types = DefaultTypes()
	}
	v := &validator{types: types, seen: map[string]int{}}
	for i := range sources {
		v.source(&sources[i])
	}
	for i := range dests {
		v.destination(&dests[i])
	}
	return errors.Join(v.errs...)
}

type validator struct {
	types *component.Types
	seen  map[string]int // name -> line
	errs  []error
}

func (v *validator) add(line int, f string, a ...any) {
	v.errs = append(v.errs, &LineError{Line: line, Msg: fmt.Sprintf(f, a...)})
}

// addAll adds errors that name their own line (yaml.v3's), or else gets
// the entry's line and name.
func (v *validator) addAll(line int, prefix string, errs []error) {
	for _, err := range errs {
		var le *LineError
		if errors.As(err, &le) || strings.HasPrefix(err.Error(), "line ") {
			v.errs = append(v.errs, err)
			continue
		}
		v.add(line, "%s: %v", prefix, err)
	}
}

func (v *validator) checkName(kind, name string, line int) {
	if !namePattern.MatchString(name) {
		v.add(line, "%s name %q: use 1-63 lower-case letters, digits, '-' or '_' (it appears in MQTT topics and file names)", kind, name)
	}
	if prev, dup := v.seen[name]; dup {
		v.add(line, "%s name %q is already used at line %d: names must be unique across sources and destinations", kind, name, prev)
	}
	v.seen[name] = line
}

func (v *validator) source(s *Source) {
	v.checkName("source", s.Name, s.Line)
	t, ok := v.types.Source(s.Type)
	if !ok {
		v.add(s.Line, "source %q: type %q is not one of %s", s.Name, s.Type, strings.Join(v.types.SourceTypes(), ", "))
		return
	}
	prefix := fmt.Sprintf("source %q", s.Name)
	v.addAll(s.Line, prefix, splitYAMLErrors(s.bad))
	// Bad values leave their keys at zero; the block's other keys are
	// still checked, so one run names every mistake.
	v.addAll(s.Line, prefix, decodeBlock(s.node, &s.Config, t.NewConfig(), sourceKeys))
	if s.Config == nil {
		return
	}
	component.SetDefaults(s.Config)
	if err := s.Config.Validate(); err != nil {
		v.add(s.Line, "%s: %v", prefix, err)
	}
	if l, ok := s.Config.(component.MessageLimiter); ok && l.MessageLimit() > storage.MaxStoredMessage {
		v.add(s.Line, "%s: max_message_bytes %s is more than the spool stores in one message (%s): set it to %s or less",
			prefix, units.Size(l.MessageLimit()), units.Size(storage.MaxStoredMessage), units.Size(storage.MaxStoredMessage))
	}
}

func (v *validator) destination(d *Destination) {
	v.checkName("destination", d.Name, d.Line)
	t, ok := v.types.Destination(d.Type)
	if !ok {
		v.add(d.Line, "destination %q: type %q is not one of %s", d.Name, d.Type, strings.Join(v.types.DestinationTypes(), ", "))
		return
	}
	prefix := fmt.Sprintf("destination %q", d.Name)
	v.addAll(d.Line, prefix, splitYAMLErrors(d.bad))
	v.addAll(d.Line, prefix, decodeBlock(d.node, &d.Config, t.NewConfig(), destKeys))
	if d.Config != nil {
		component.SetDefaults(d.Config)
		if err := d.Config.Validate(); err != nil {
			v.add(d.Line, "%s: %v", prefix, err)
		}
	}
	if _, err := route.Compile(d.Match); err != nil {
		v.add(d.Line, "destination %q: match: %v", d.Name, err)
	}
	if t.Discards && len(d.Match.All) == 0 && len(d.Match.Any) == 0 {
		v.add(d.Line, "rubbish bin %q has no match rules: it would discard every message; add match.any or match.all", d.Name)
	}
	if d.MaxAttempts < 0 {
		v.add(d.Line, "destination %q: max_attempts %d: use 0 (retry forever) or a positive count", d.Name, d.MaxAttempts)
	}
	if d.OnReject != "" && d.OnReject != deliver.OnRejectHold && d.OnReject != deliver.OnRejectDead {
		v.add(d.Line, "destination %q: on_reject %q: use hold (the default: the refused message waits first in line for an operator) or dead (it goes to the dead letters at once)", d.Name, d.OnReject)
	}
	if err := d.validateLanes(); err != nil {
		v.add(d.Line, "%s: %v", prefix, err)
	}
}

// MaxLanes bounds lanes: past a few dozen requests in flight a receiver is
// more likely to refuse them than to go faster.
const MaxLanes = 64

// DefaultLaneKey is the patient identifier: one patient's messages keep
// their order.
const DefaultLaneKey = "PID-3.1"

// validateLanes checks lanes against what the type (as configured) can
// take at once, and the lane key's field path.
func (d *Destination) validateLanes() error {
	limit := 1
	if l, ok := d.Config.(component.LaneLimiter); ok {
		limit = min(l.MaxLanes(), MaxLanes)
	}
	switch {
	case d.Lanes < 0 || d.Lanes > MaxLanes:
		return fmt.Errorf("lanes %d: use 1 (one message at a time, strict spool order) up to %d", d.Lanes, MaxLanes)
	case d.Lanes > limit:
		return fmt.Errorf("lanes %d: this %s destination takes %d message(s) at a time as configured; lower lanes, or let it take more (webservice takes up to %d; mllp as many as its connections)", d.Lanes, d.Type, limit, MaxLanes)
	}
	if d.LaneKey != "" {
		if _, err := hl7.ParsePath(d.LaneKey); err != nil {
			return fmt.Errorf("lane_key: %w", err)
		}
	}
	return nil
}

// LaneKeyPath is the field the destination's lanes are keyed on.
func (d *Destination) LaneKeyPath() hl7.Path {
	k := d.LaneKey
	if k == "" {
		k = DefaultLaneKey
	}
	p, _ := hl7.ParsePath(k) // validateLanes checked it
	return p
}
