// Package component is the registry of source and destination types: what a
// `type:` in the configuration file may name, the block of keys each type
// reads, its sample configuration and how to build one.
//
// Each type registers itself from its own package (a Register function
// called once from the list that builds the gateway's registry), in the way
// Telegraf plugins keep a sample.conf beside the code and call inputs.Add.
// There is no package-level registry: the registry (Types) is a value, built where
// the program is wired, so a test can build one with only the types it
// needs.
package component

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// Config is a type's block of keys, decoded from YAML into a pointer to the
// type's config struct. A Config that also has SetDefaults() gets it called
// before Validate.
type Config interface {
	Validate() error
}

// defaulter is a Config that fills what the file leaves out.
type defaulter interface{ SetDefaults() }

// SetDefaults applies c's defaults when it has any.
func SetDefaults(c Config) {
	if d, ok := c.(defaulter); ok {
		d.SetDefaults()
	}
}

// Deps is everything a constructor is given besides its own block: the
// same struct for every type, so adding a collaborator is one field here
// and not a new constructor shape.
type Deps struct {
	Name     string                    // the configured name of this source or destination
	Log      *slog.Logger              // never nil
	Health   *health.Component         // this component's state and counters; never nil
	Loop     *health.Loop              // liveness beacon, for sources whose type asks for one (SourceType.Liveness); else nil
	Alarm    func(kind, detail string) // operator alarms; may be nil
	Activity func()                    // ACT LED flash; may be nil
	DeviceID string                    // device.id (COMPUTERNAME and the like)
	Version  string                    // firmware version
	// Lanes is how many Deliver calls the destination's worker may make at
	// once (the destination's `lanes`; 1 when it has none); a destination
	// can keep as many connections open. Destinations only.
	Lanes  int
	Intake flow.Intake // sources only: where received messages go (routed into the spool)
	// Gates are the sync gates of the file systems the gateway writes to,
	// for a destination that writes files (syncgate: its syncs and those of
	// every other writer on its file system, the spool's among them, see
	// each other's failures); nil when the spool has none.
	Gates *syncgate.Gates
}

// Runner is a built source: it runs until its context ends. A source is
// built anew for each run, so Run is called at most once per value.
type Runner interface {
	Run(ctx context.Context) error
}

// Repinger is implemented by destinations that keep a session and can be
// told to open a new one before their next delivery (the `reping` command).
type Repinger interface {
	Reping()
}

// BackoffLimiter is implemented by a Config whose type sets its own default
// for the destination's max_backoff.
type BackoffLimiter interface {
	MaxBackoffDefault() time.Duration
}

// MessageLimiter is implemented by a source's Config that bounds the size
// of one message it takes in (its max_message_bytes). The gateway checks
// it against what the spool can store, so a limit the spool cannot honour
// is refused when the file is loaded, not answered AR message by message.
type MessageLimiter interface {
	MessageLimit() int64
}

// Endpoint is one network peer a block makes the gateway reach, or one
// port it makes the gateway open, with what protects the traffic. A remote
// configuration change is judged on these (device/config), so a type states
// every endpoint it has, whatever it calls its keys.
type Endpoint struct {
	Key     string // the key in the block that names it: "address", "url", "listen"
	Proto   string // what travels there: "mllp", "webservice", "mqtt"
	Listens bool   // a port this box opens, not a host it reaches
	Host    string // lower case; a listener's bind address ("" for all)
	Port    string
	// TLS: every byte encrypted and the peer's certificate verified. False
	// too when the peer may send the gateway on to plain http.
	TLS bool
	// CAFile adds roots for the server's certificate; on a listener it is
	// the CA client certificates must come from (set: they are required).
	CAFile     string
	ServerName string // the name the server's certificate must carry ("": the host)
	ClientCert string // the certificate this box presents to the server
	Secret     string // the file whose content goes to the peer as a password
	// AllowedHosts are the hosts (glob patterns) the peer may send this box
	// on to; nil means any.
	AllowedHosts []string
}

// FileKind says what a file key holds, which decides where a remote change
// may point it.
type FileKind string

// File kinds.
const (
	FileCredential FileKind = "credential" // a password, private key or certificate
	FileOutput     FileKind = "output"     // a directory messages are written to
	FileDevice     FileKind = "device"     // a serial device
	FileState      FileKind = "state"      // state the box's safety depends on: local changes only
)

// File is one key of a block that names a file or a directory.
type File struct {
	Key  string // the key in the block: "password_file", "dir", "device"
	Path string
	Kind FileKind
	// Secret: its content must stay private (a password, a private key),
	// so no other user may read it.
	Secret bool
}

// Reach is what a block makes the gateway touch: its endpoints and files.
type Reach struct {
	Endpoints []Endpoint
	Files     []File
}

// Reacher is implemented by a Config that states its Reach. A block that
// does not is changed only by a local operator, never by a remote
// config-apply: what it touches cannot be judged.
type Reacher interface {
	Reach() Reach
}

// LaneLimiter is implemented by a Config whose type's Output may be called
// from several goroutines at once: MaxLanes is how many, as configured.
// A destination type without it takes `lanes` of 1 only.
type LaneLimiter interface {
	MaxLanes() int
}

// SourceType is one registered `type:` of sources.
type SourceType struct {
	Type     string // the value of `type:`
	Sample   []byte // a commented sample: a fragment of hl7edge.yaml that loads as it is
	Liveness bool   // the source beats Deps.Loop while it runs; a stalled beat means it hangs
	config   func() Config
	build    func(Config, Deps) (Runner, error)
}

// NewConfig returns an empty block for the type, ready to decode into.
func (t SourceType) NewConfig() Config { return t.config() }

// Build makes a source from a block made by NewConfig (decoded, with
// defaults, validated) and its dependencies.
func (t SourceType) Build(c Config, d Deps) (Runner, error) { return t.build(c, d) }

// DestinationType is one registered `type:` of destinations.
type DestinationType struct {
	Type   string // the value of `type:`
	Sample []byte // a commented sample: a fragment of hl7edge.yaml that loads as it is
	// Discards marks a rubbish bin: intake drops what it matches, nothing is
	// queued, and there is nothing to build.
	Discards bool
	// Upstream marks a destination that carries the box's messages out to
	// the hospital's systems: the front panel's LINK LED and `status` count
	// it as the box's link.
	Upstream bool
	config   func() Config // nil: the type reads no keys of its own
	build    func(Config, Deps) (flow.Output, error)
}

// NewConfig returns an empty block for the type, or nil when it has none.
func (t DestinationType) NewConfig() Config {
	if t.config == nil {
		return nil
	}
	return t.config()
}

// Build makes a destination from a block made by NewConfig and its
// dependencies. A destination that keeps a session may implement Repinger.
func (t DestinationType) Build(c Config, d Deps) (flow.Output, error) {
	if t.build == nil {
		return nil, fmt.Errorf("type %q delivers nothing and has nothing to build", t.Type)
	}
	return t.build(c, d)
}

// NewSource describes a source type whose block is a C. The generic form
// lets build take its own config type rather than assert one. Set Liveness
// on the result when the source beats Deps.Loop.
func NewSource[C any, P interface {
	*C
	Config
}](typ string, sample []byte, build func(P, Deps) (Runner, error)) SourceType {
	return SourceType{
		Type: typ, Sample: sample,
		config: func() Config { return P(new(C)) },
		build: func(c Config, d Deps) (Runner, error) {
			p, ok := c.(P)
			if !ok {
				return nil, fmt.Errorf("type %q was given a %T block", typ, c)
			}
			return build(p, d)
		},
	}
}

// NewDestination describes a destination type whose block is a C.
func NewDestination[C any, P interface {
	*C
	Config
}](typ string, sample []byte, build func(P, Deps) (flow.Output, error)) DestinationType {
	return DestinationType{
		Type: typ, Sample: sample,
		config: func() Config { return P(new(C)) },
		build: func(c Config, d Deps) (flow.Output, error) {
			p, ok := c.(P)
			if !ok {
				return nil, fmt.Errorf("type %q was given a %T block", typ, c)
			}
			return build(p, d)
		},
	}
}

// NewBin describes a rubbish-bin destination type: no keys of its own,
// nothing built, whatever it matches is accepted and dropped.
func NewBin(typ string, sample []byte) DestinationType {
	return DestinationType{Type: typ, Sample: sample, Discards: true}
}

// Types holds the types a configuration may name.
type Types struct {
	sources map[string]SourceType
	dests   map[string]DestinationType
}

// NewTypes returns an empty registry of types.
func NewTypes() *Types {
	return &Types{sources: map[string]SourceType{}, dests: map[string]DestinationType{}}
}

// AddSource registers a source type. A type registered twice, or with no
// name, is a wiring mistake in the program, so it panics: the first test
// that builds the registry finds it.
func (r *Types) AddSource(t SourceType) {
	if t.Type == "" || t.build == nil || t.config == nil {
		panic("component: source type without a name, config or constructor")
	}
	if _, dup := r.sources[t.Type]; dup {
		panic(fmt.Sprintf("component: source type %q registered twice", t.Type))
	}
	r.sources[t.Type] = t
}

// AddDestination registers a destination type; see AddSource.
func (r *Types) AddDestination(t DestinationType) {
	if t.Type == "" || (t.build == nil && !t.Discards) {
		panic("component: destination type without a name or constructor")
	}
	if _, dup := r.dests[t.Type]; dup {
		panic(fmt.Sprintf("component: destination type %q registered twice", t.Type))
	}
	r.dests[t.Type] = t
}

// Source looks up a source type.
func (r *Types) Source(typ string) (SourceType, bool) {
	t, ok := r.sources[typ]
	return t, ok
}

// Destination looks up a destination type.
func (r *Types) Destination(typ string) (DestinationType, bool) {
	t, ok := r.dests[typ]
	return t, ok
}

// SourceTypes lists the source type names, sorted, for error messages.
func (r *Types) SourceTypes() []string { return sortedKeys(r.sources) }

// DestinationTypes lists the destination type names, sorted.
func (r *Types) DestinationTypes() []string { return sortedKeys(r.dests) }

// Sample is one registered sample configuration.
type Sample struct {
	Kind string // "source" or "destination"
	Type string
	YAML []byte
}

// Samples lists the sample of every registered type, sources first, each
// kind in type order.
func (r *Types) Samples() []Sample {
	var out []Sample
	for _, typ := range r.SourceTypes() {
		out = append(out, Sample{Kind: "source", Type: typ, YAML: r.sources[typ].Sample})
	}
	for _, typ := range r.DestinationTypes() {
		out = append(out, Sample{Kind: "destination", Type: typ, YAML: r.dests[typ].Sample})
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// HostPort splits host[:port] as an Endpoint holds it: the host in lower
// case without brackets or a trailing dot, the port defPort when absent.
func HostPort(hostport, defPort string) (host, port string) {
	host, port = hostport, defPort
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	}
	return strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), ".")), port
}
