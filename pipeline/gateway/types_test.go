package gateway_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/fileout"
	"github.com/hl7edge/hl7edge/pipeline/gateway"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/storage"
)

// The types of this file exist only here: the gateway must take them from
// the registry it is given, not from a list of its own.

// oneShotConfig is a source that offers one message to intake and then
// waits for its context.
type oneShotConfig struct {
	Control string `yaml:"control"`
}

func (c *oneShotConfig) Validate() error {
	if c.Control == "" {
		return errors.New("control is empty")
	}
	return nil
}

type oneShot struct {
	d       component.Deps
	control string
	outcome chan flow.Outcome
}

func (s *oneShot) Run(ctx context.Context) error {
	raw := "MSH|^~\\&|LAB|WARD|EHR|HOSP|20260101120000||ADT^A01|" + s.control + "|P|2.5\rPID|1||123\r"
	s.outcome <- s.d.Intake.Accept(ctx, flow.Inbound{Source: s.d.Name, Raw: []byte(raw)})
	<-ctx.Done()
	return nil
}

// memoryConfig is a destination that keeps what it is given.
type memoryConfig struct {
	Label string `yaml:"label"`
}

func (c *memoryConfig) Validate() error { return nil }

type memory struct {
	mu   sync.Mutex
	got  []*flow.Message
	kept chan struct{}
}

func (m *memory) Deliver(_ context.Context, msg *flow.Message) error {
	m.mu.Lock()
	m.got = append(m.got, msg)
	m.mu.Unlock()
	m.kept <- struct{}{}
	return nil
}

func (m *memory) Close() error { return nil }

func TestGatewayBuildsRegisteredTypes(t *testing.T) {
	outcome := make(chan flow.Outcome, 1)
	mem := &memory{kept: make(chan struct{}, 1)}
	var given component.Deps
	types := component.NewTypes()
	types.AddSource(component.NewSource("oneshot", nil, func(c *oneShotConfig, d component.Deps) (component.Runner, error) {
		return &oneShot{d: d, control: c.Control, outcome: outcome}, nil
	}))
	types.AddDestination(component.NewDestination("memory", nil, func(c *memoryConfig, d component.Deps) (flow.Output, error) {
		given = d
		return mem, nil
	}))
	var f struct {
		Sources      []gateway.Source      `yaml:"sources"`
		Destinations []gateway.Destination `yaml:"destinations"`
	}
	text := `
sources:
  - {name: in, type: oneshot, control: CTRL-1}
destinations:
  - {name: keep, type: memory, label: all}
`
	if err := yaml.Unmarshal([]byte(text), &f); err != nil {
		t.Fatal(err)
	}
	spool := storage.Config{Dir: t.TempDir()}
	spool.SetDefaults()
	reg := health.NewRegistry("gw-types", "v9", nil)
	gw, err := gateway.New(gateway.Config{
		Spool: spool, Sources: f.Sources, Destinations: f.Destinations, DeviceID: "gw-types", Version: "v9", Types: types,
	}, gateway.Options{Health: reg})
	if err != nil {
		t.Fatal(err)
	}
	if given.Name != "keep" || given.DeviceID != "gw-types" || given.Version != "v9" || given.Health == nil || given.Log == nil {
		t.Errorf("the destination was built with %+v", given)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	if o := <-outcome; o.Code != flow.Accepted {
		t.Fatalf("intake answered %+v", o)
	}
	select {
	case <-mem.kept:
	case <-time.After(time.Minute):
		t.Fatal("the message never reached the registered destination")
	}
	mem.mu.Lock()
	defer mem.mu.Unlock()
	if len(mem.got) != 1 || mem.got[0].Source != "in" || !strings.Contains(string(mem.got[0].Raw), "CTRL-1") {
		t.Errorf("delivered %+v", mem.got)
	}
}

// TestValidateAgainstItsRegistry: the type names, the known keys and the
// line numbers in errors come from the registry Validate is given.
func TestValidateAgainstItsRegistry(t *testing.T) {
	types := component.NewTypes()
	fileout.Register(types)
	var f struct {
		Sources      []gateway.Source      `yaml:"sources"`
		Destinations []gateway.Destination `yaml:"destinations"`
	}
	text := `sources:
  - name: mon
    type: mllp
destinations:
  - name: out
    type: file
    dir: /tmp/out
    colour: blue
  - name: also
    type: file
    dir: [a, b]
  - name: bin
    type: rubbish
    match: {any: ["MSH-11 in T"]}
  - name: late
    type: file
    max_backoff: soon
`
	// A bad common value does not stop the decoding (nor drop its entry):
	// Validate names it with the rest.
	if err := yaml.Unmarshal([]byte(text), &f); err != nil || len(f.Destinations) != 4 {
		t.Fatalf("decoding: %v, %d destinations", err, len(f.Destinations))
	}
	err := gateway.Validate(types, f.Sources, f.Destinations)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`line 2: source "mon": type "mllp" is not one of`,
		`line 8: unknown key "colour" (known here: name, type, match, max_attempts, max_backoff, on_reject, lanes, lane_key, dir)`,
		`line 11: cannot unmarshal`,
		`line 12: destination "bin": type "rubbish" is not one of file`,
		`line 17: duration "soon"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if err := gateway.Validate(nil, f.Sources[:0], f.Destinations[:0]); err != nil {
		t.Errorf("nothing configured: %v", err)
	}
}

// TestDefaultTypesLiveness: the sources that beat a liveness loop (the
// serial port's read poll, the web-service source's poll round) get one
// from the gateway; an MLLP listener, idle between connections, does not.
func TestDefaultTypesLiveness(t *testing.T) {
	types := gateway.DefaultTypes()
	for typ, want := range map[string]bool{"mllp": false, "serial": true, "webservice": true} {
		st, ok := types.Source(typ)
		if !ok || st.Liveness != want {
			t.Errorf("source type %s: registered %v, liveness %v; want liveness %v", typ, ok, st.Liveness, want)
		}
	}
}

// TestShippedTypesStateTheirReach: every source and destination type the
// product ships states its endpoints and files (component.Reacher), so a
// remote config-apply can judge it; only rubbish bins have no block.
func TestShippedTypesStateTheirReach(t *testing.T) {
	r := gateway.DefaultTypes()
	for _, typ := range r.SourceTypes() {
		st, _ := r.Source(typ)
		if _, ok := st.NewConfig().(component.Reacher); !ok {
			t.Errorf("source type %s states no Reach: a remote change to it would always be refused", typ)
		}
	}
	for _, typ := range r.DestinationTypes() {
		dt, _ := r.Destination(typ)
		c := dt.NewConfig()
		if _, ok := c.(component.Reacher); !ok && !dt.Discards {
			t.Errorf("destination type %s states no Reach: a remote change to it would always be refused", typ)
		}
	}
}

// TestSourceLimitAboveTheSpoolIsRefusedAtLoad: a source may not promise to
// take messages the spool cannot store; that is said when the file is
// loaded, with the most it may be, not as an AR per message later.
func TestSourceLimitAboveTheSpoolIsRefusedAtLoad(t *testing.T) {
	for _, tc := range []struct {
		block string
		ok    bool
	}{
		{"{name: in, type: mllp, listen: \"127.0.0.1:2575\", max_message_bytes: 8MiB}", true},
		{"{name: in, type: mllp, listen: \"127.0.0.1:2575\", max_message_bytes: 9MiB}", false},
		{"{name: in, type: serial, device: /dev/ttyUSB0, max_message_bytes: 16MiB}", false},
		{"{name: in, type: webservice, url: \"https://ehr.example/ping\", logon_id: gw, password_file: /etc/p, max_message_bytes: 64MiB}", false},
	} {
		var f struct {
			Sources []gateway.Source `yaml:"sources"`
		}
		if err := yaml.Unmarshal([]byte("sources:\n  - "+tc.block+"\n"), &f); err != nil {
			t.Fatal(err)
		}
		err := gateway.Validate(nil, f.Sources, nil)
		if tc.ok {
			if err != nil {
				t.Errorf("%s: %v", tc.block, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "is more than the spool stores in one message (8MiB): set it to 8MiB or less") {
			t.Errorf("%s: %v, want the spool's limit named", tc.block, err)
		}
	}
}
