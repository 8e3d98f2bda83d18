package component_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/component"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
)

// echoConfig is a block with a default and a rule.
type echoConfig struct {
	Port int `yaml:"port"`
}

func (c *echoConfig) SetDefaults() {
	if c.Port == 0 {
		c.Port = 7
	}
}

func (c *echoConfig) Validate() error {
	if c.Port < 0 {
		return errors.New("port is negative")
	}
	return nil
}

// plainConfig has no defaults.
type plainConfig struct{ Dir string }

func (c *plainConfig) Validate() error { return nil }

type runFunc func(context.Context) error

func (f runFunc) Run(ctx context.Context) error { return f(ctx) }

type nopOutput struct{ dir string }

func (nopOutput) Deliver(context.Context, *flow.Message) error { return nil }
func (nopOutput) Close() error                                 { return nil }

func testRegistry() *component.Types {
	r := component.NewTypes()
	echo := component.NewSource("echo", []byte("sources: []\n"), func(c *echoConfig, d component.Deps) (component.Runner, error) {
		if c.Port == 0 {
			return nil, errors.New("built before defaults")
		}
		return runFunc(func(context.Context) error { return nil }), nil
	})
	echo.Liveness = true
	r.AddSource(echo)
	r.AddDestination(component.NewDestination("dir", []byte("destinations: []\n"), func(c *plainConfig, d component.Deps) (flow.Output, error) {
		return nopOutput{dir: c.Dir}, nil
	}))
	r.AddDestination(component.NewBin("bin", nil))
	return r
}

func TestLookUpAndBuild(t *testing.T) {
	r := testRegistry()
	if got := r.SourceTypes(); !slices.Equal(got, []string{"echo"}) {
		t.Errorf("SourceTypes = %v", got)
	}
	if got := r.DestinationTypes(); !slices.Equal(got, []string{"bin", "dir"}) {
		t.Errorf("DestinationTypes = %v, want sorted [bin dir]", got)
	}
	st, ok := r.Source("echo")
	if !ok || !st.Liveness {
		t.Fatalf("Source(echo) = %+v, %v", st, ok)
	}
	if _, ok := r.Source("dir"); ok {
		t.Error("a destination type is found as a source type")
	}

	// Each NewConfig is a fresh block: two entries of one type share nothing.
	a, b := st.NewConfig(), st.NewConfig()
	if a == b {
		t.Fatal("NewConfig returned the same block twice")
	}
	if _, err := st.Build(a, component.Deps{Name: "e"}); err == nil {
		t.Error("built from a block without defaults; the constructor's check did not run")
	}
	component.SetDefaults(a)
	if a.(*echoConfig).Port != 7 {
		t.Errorf("SetDefaults: %+v", a)
	}
	if _, err := st.Build(a, component.Deps{Name: "e"}); err != nil {
		t.Error(err)
	}
	// A block of another type is refused, naming the type; the caller (the
	// gateway) names the entry, so the error does not repeat it.
	if _, err := st.Build(&plainConfig{}, component.Deps{Name: "e"}); err == nil || !strings.Contains(err.Error(), `type "echo"`) || strings.Contains(err.Error(), `"e"`) {
		t.Errorf("Build with the wrong block: %v", err)
	}

	dt, _ := r.Destination("dir")
	c := dt.NewConfig()
	component.SetDefaults(c) // no SetDefaults: nothing happens
	c.(*plainConfig).Dir = "/x"
	out, err := dt.Build(c, component.Deps{Name: "d"})
	if err != nil || out.(nopOutput).dir != "/x" {
		t.Errorf("Build = %v, %v", out, err)
	}

	bin, _ := r.Destination("bin")
	if !bin.Discards || bin.NewConfig() != nil {
		t.Errorf("bin: %+v", bin)
	}
	if _, err := bin.Build(nil, component.Deps{Name: "tests"}); err == nil {
		t.Error("a bin built an output")
	}
}

func TestSamples(t *testing.T) {
	var got []string
	for _, s := range testRegistry().Samples() {
		got = append(got, s.Kind+"/"+s.Type+":"+string(s.YAML))
	}
	want := []string{"source/echo:sources: []\n", "destination/bin:", "destination/dir:destinations: []\n"}
	if !slices.Equal(got, want) {
		t.Errorf("Samples = %q, want %q", got, want)
	}
}

func TestRegistrationMistakesPanic(t *testing.T) {
	mustPanic := func(what string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", what)
			}
		}()
		f()
	}
	r := testRegistry()
	mustPanic("a source type registered twice", func() {
		r.AddSource(component.NewSource("echo", nil, func(*echoConfig, component.Deps) (component.Runner, error) { return nil, nil }))
	})
	mustPanic("a destination type registered twice", func() { r.AddDestination(component.NewBin("dir", nil)) })
	mustPanic("a source type with no name", func() {
		r.AddSource(component.NewSource("", nil, func(*echoConfig, component.Deps) (component.Runner, error) { return nil, nil }))
	})
	mustPanic("a zero destination type", func() { r.AddDestination(component.DestinationType{Type: "x"}) })
	// Registries are values: another one is unaffected.
	if _, ok := component.NewTypes().Source("echo"); ok {
		t.Error("a new registry already holds a type")
	}
}

// TestHostPort: endpoints compare hosts as the resolver would treat them:
// case, brackets and a trailing dot do not make a host new.
func TestHostPort(t *testing.T) {
	for in, want := range map[string][2]string{
		"LIS.Example.org.:2575": {"lis.example.org", "2575"},
		"[fe80::1]:443":         {"fe80::1", "443"},
		"ingest.example.org":    {"ingest.example.org", "443"},
		":2575":                 {"", "2575"},
	} {
		h, p := component.HostPort(in, "443")
		if h != want[0] || p != want[1] {
			t.Errorf("HostPort(%q) = %q, %q; want %q, %q", in, h, p, want[0], want[1])
		}
	}
}
