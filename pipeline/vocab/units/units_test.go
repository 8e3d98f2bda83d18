package units

import (
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestSizes(t *testing.T) {
	for in, want := range map[string]Size{"512": 512, "64KiB": 64 << 10, "1MiB": 1 << 20, "2GiB": 2 << 30, "1MB": 1_000_000, "1.5 MiB": 3 << 19, "10m": 10 << 20} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
		if back, _ := ParseSize(got.String()); back != got {
			t.Errorf("%q does not read back: %s -> %d", in, got, back)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "lots", "1 parsec"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	if h := Size(1536 << 10).Human(); h != "1.5 MiB" {
		t.Errorf("Human = %q", h)
	}
}

func TestYAML(t *testing.T) {
	var c struct {
		S Size     `yaml:"s"`
		D Duration `yaml:"d"`
	}
	if err := yaml.Unmarshal([]byte("s: 4MiB\nd: 1m30s\n"), &c); err != nil || c.S != 4<<20 || c.D.D() != 90*time.Second {
		t.Fatalf("%+v %v", c, err)
	}
	if err := yaml.Unmarshal([]byte("d: 30\n"), &c); err == nil {
		t.Fatal("a duration without unit was accepted")
	}
	out, _ := yaml.Marshal(c)
	if string(out) != "s: 4MiB\nd: 1m30s\n" {
		t.Fatalf("marshal: %q", out)
	}
}
