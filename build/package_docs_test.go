package build

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestPackageShipsDocsAndSamples: the .deb carries the README, every
// document of docs/ and every configuration sample under
// /usr/share/doc/hl7edge, since the configuration file, `hl7edge help` and
// the error messages point to them and a gateway has no source tree
// (issue 28, point 8); and every file the package names exists.
func TestPackageShipsDocsAndSamples(t *testing.T) {
	b, err := os.ReadFile("nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Contents []struct {
			Src string `yaml:"src"`
			Dst string `yaml:"dst"`
		} `yaml:"contents"`
	}
	if err := yaml.Unmarshal(b, &pkg); err != nil {
		t.Fatal(err)
	}
	shipped := map[string]string{}
	for _, c := range pkg.Contents {
		if c.Src == "" || strings.Contains(c.Src, "${") {
			continue
		}
		if _, err := os.Stat(filepath.Join("..", c.Src)); err != nil {
			t.Errorf("build/nfpm.yaml ships %s, which does not exist", c.Src)
		}
		shipped[c.Src] = c.Dst
	}
	want := []string{"README.md"}
	docs, _ := filepath.Glob("../docs/*.md")
	for _, d := range docs {
		want = append(want, strings.TrimPrefix(d, "../"))
	}
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && skipDir("..", path, d) {
			return filepath.SkipDir
		}
		rel := strings.TrimPrefix(path, "../")
		if d.Name() == "sample.yaml" || strings.HasPrefix(rel, "device/samples/") && strings.HasSuffix(rel, ".yaml") {
			want = append(want, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 15 {
		t.Fatalf("found only %d documents and samples; the test no longer looks in the right places", len(want))
	}
	for _, w := range want {
		if dst, ok := shipped[w]; !ok || !strings.HasPrefix(dst, "/usr/share/doc/hl7edge/") {
			t.Errorf("build/nfpm.yaml does not ship %s under /usr/share/doc/hl7edge/ (dst %q)", w, dst)
		}
	}
}
