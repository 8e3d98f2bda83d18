package config

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/gateway"
)

// TestEverySampleLoads keeps the samples honest: the sample each source and
// destination type registers, and every sample.yaml and hl7edge.yaml in the
// repository, pass the loader the daemon and `hl7edge config check` use.
// Each sample is a fragment of hl7edge.yaml, so it loads on its own.
func TestEverySampleLoads(t *testing.T) {
	types := gateway.DefaultTypes()
	for _, s := range types.Samples() {
		t.Run(s.Kind+"/"+s.Type, func(t *testing.T) {
			c := parseSample(t, s.YAML)
			// The sample of a type must show that type.
			var shown []string
			if s.Kind == "source" {
				for _, e := range c.Sources {
					shown = append(shown, e.Type)
				}
			} else {
				for _, e := range c.Destinations {
					shown = append(shown, e.Type)
				}
			}
			if !slices.Contains(shown, s.Type) {
				t.Errorf("the sample of %s type %q shows no %s of that type (it shows %v)", s.Kind, s.Type, s.Kind, shown)
			}
		})
	}

	var files []string
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (d.Name() == "sample.yaml" || d.Name() == "hl7edge.yaml") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// board, storage, mqtt, routing, the four component packages and
	// build/hl7edge.yaml at least: fewer means the walk missed some.
	if len(files) < 9 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		t.Run(rel, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			parseSample(t, b)
		})
	}
}

// gatewayFile is a file a sample names that exists only on a gateway.
var gatewayFile = regexp.MustCompile(`/etc/hl7edge/[A-Za-z0-9._-]+\.(pass|pem|crt|key)\b`)

// parseSample parses text with the files it names under /etc/hl7edge
// replaced by files made for the test, as they would be on a gateway.
func parseSample(t *testing.T, text []byte) *Config {
	t.Helper()
	dir := t.TempDir()
	s := gatewayFile.ReplaceAllStringFunc(string(text), func(p string) string {
		local := filepath.Join(dir, filepath.Base(p))
		if err := os.WriteFile(local, []byte("secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return local
	})
	c, err := ParseTypes([]byte(s), gateway.DefaultTypes())
	if err != nil {
		t.Fatalf("refused:\n%v", err)
	}
	return c
}
