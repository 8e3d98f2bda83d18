package gateway

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/hl7edge/hl7edge/pipeline/fileout"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/route"
	"github.com/hl7edge/hl7edge/pipeline/serialport"
	"github.com/hl7edge/hl7edge/pipeline/units"
	"github.com/hl7edge/hl7edge/pipeline/webservice"
)

// Source is one entry of `sources:`. Exactly one of the typed blocks is set,
// according to Type.
type Source struct {
	Name       string
	Type       string
	Line       int // where it starts in the file, for error messages
	MLLP       *mllp.ListenerConfig
	Serial     *serialport.Config
	WebService *webservice.SourceConfig
}

// Destination is one entry of `destinations:`.
type Destination struct {
	Name        string
	Type        string
	Line        int
	Match       route.Match
	MaxAttempts int
	MaxBackoff  units.Duration
	WebService  *webservice.DestinationConfig
	MLLP        *mllp.DestinationConfig
	Serial      *serialport.Config
	File        *fileout.Config
}

// Source and destination types.
const (
	TypeMLLP       = "mllp"
	TypeSerial     = "serial"
	TypeWebService = "webservice"
	TypeFile       = "file"
	TypeRubbish    = "rubbish"
)

var sourceTypes = map[string]func(*Source) any{
	TypeMLLP:       func(s *Source) any { s.MLLP = &mllp.ListenerConfig{}; return s.MLLP },
	TypeSerial:     func(s *Source) any { s.Serial = &serialport.Config{}; return s.Serial },
	TypeWebService: func(s *Source) any { s.WebService = &webservice.SourceConfig{}; return s.WebService },
}

var destTypes = map[string]func(*Destination) any{
	TypeWebService: func(d *Destination) any { d.WebService = &webservice.DestinationConfig{}; return d.WebService },
	TypeMLLP:       func(d *Destination) any { d.MLLP = &mllp.DestinationConfig{}; return d.MLLP },
	TypeSerial:     func(d *Destination) any { d.Serial = &serialport.Config{}; return d.Serial },
	TypeFile:       func(d *Destination) any { d.File = &fileout.Config{}; return d.File },
	TypeRubbish:    func(*Destination) any { return nil },
}

// UnmarshalYAML decodes the common keys and then the block for the type,
// refusing keys that the type does not know, with their line.
func (s *Source) UnmarshalYAML(n *yaml.Node) error {
	var common struct {
		Name string `yaml:"name"`
		Type string `yaml:"type"`
	}
	if err := n.Decode(&common); err != nil {
		return err
	}
	s.Name, s.Type, s.Line = common.Name, common.Type, n.Line
	mk, ok := sourceTypes[s.Type]
	if !ok {
		return &yaml.TypeError{Errors: []string{lineErr(n, "source %q: type %q is not one of %s", s.Name, s.Type, keysOf(sourceTypes)).Error()}}
	}
	return decodeTyped(n, mk(s), []string{"name", "type"})
}

// UnmarshalYAML decodes a destination like Source.UnmarshalYAML.
func (d *Destination) UnmarshalYAML(n *yaml.Node) error {
	var common struct {
		Name        string         `yaml:"name"`
		Type        string         `yaml:"type"`
		Match       route.Match    `yaml:"match"`
		MaxAttempts int            `yaml:"max_attempts"`
		MaxBackoff  units.Duration `yaml:"max_backoff"`
	}
	if err := n.Decode(&common); err != nil {
		return err
	}
	d.Name, d.Type, d.Line = common.Name, common.Type, n.Line
	d.Match, d.MaxAttempts, d.MaxBackoff = common.Match, common.MaxAttempts, common.MaxBackoff
	mk, ok := destTypes[d.Type]
	if !ok {
		return &yaml.TypeError{Errors: []string{lineErr(n, "destination %q: type %q is not one of %s", d.Name, d.Type, keysOf(destTypes)).Error()}}
	}
	return decodeTyped(n, mk(d), []string{"name", "type", "match", "max_attempts", "max_backoff"})
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
	if len(errs) > 0 {
		// A *yaml.TypeError lets the decoder carry on with the rest of the
		// file, so one run reports every mistake.
		te := &yaml.TypeError{}
		for _, e := range errs {
			te.Errors = append(te.Errors, e.Error())
		}
		return te
	}
	if target == nil {
		return nil
	}
	return sub.Decode(target)
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

func keysOf[V any](m map[string]V) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return strings.Join(ks, ", ")
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

// Validate checks sources and destinations together: unique, well-formed
// names, each block valid, matching rules that compile.
func Validate(sources []Source, dests []Destination) error {
	var errs []error
	seen := map[string]int{}
	add := func(line int, f string, a ...any) {
		errs = append(errs, &LineError{Line: line, Msg: fmt.Sprintf(f, a...)})
	}
	checkName := func(kind, name string, line int) {
		if !namePattern.MatchString(name) {
			add(line, "%s name %q: use 1-63 lower-case letters, digits, '-' or '_' (it appears in MQTT topics and file names)", kind, name)
		}
		if prev, dup := seen[name]; dup {
			add(line, "%s name %q is already used at line %d: names must be unique across sources and destinations", kind, name, prev)
		}
		seen[name] = line
	}
	for i := range sources {
		s := &sources[i]
		checkName("source", s.Name, s.Line)
		var err error
		switch {
		case s.MLLP != nil:
			s.MLLP.SetDefaults()
			err = s.MLLP.Validate()
		case s.Serial != nil:
			s.Serial.SetDefaults()
			err = s.Serial.Validate()
		case s.WebService != nil:
			s.WebService.SetDefaults()
			err = s.WebService.Validate()
		}
		if err != nil {
			add(s.Line, "source %q: %v", s.Name, err)
		}
	}
	for i := range dests {
		d := &dests[i]
		checkName("destination", d.Name, d.Line)
		var err error
		switch {
		case d.WebService != nil:
			d.WebService.SetDefaults()
			err = d.WebService.Validate()
		case d.MLLP != nil:
			d.MLLP.SetDefaults()
			err = d.MLLP.Validate()
		case d.Serial != nil:
			d.Serial.SetDefaults()
			err = d.Serial.Validate()
		case d.File != nil:
			err = d.File.Validate()
		}
		if err != nil {
			add(d.Line, "destination %q: %v", d.Name, err)
		}
		if _, err := route.Compile(d.Match); err != nil {
			add(d.Line, "destination %q: match: %v", d.Name, err)
		}
		if d.Type == TypeRubbish && len(d.Match.All) == 0 && len(d.Match.Any) == 0 {
			add(d.Line, "rubbish bin %q has no match rules: it would discard every message; add match.any or match.all", d.Name)
		}
		if d.MaxAttempts < 0 {
			add(d.Line, "destination %q: max_attempts %d: use 0 (retry forever) or a positive count", d.Name, d.MaxAttempts)
		}
	}
	return errors.Join(errs...)
}
