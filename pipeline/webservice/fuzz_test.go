package webservice

import (
	"errors"
	"path"
	"regexp"
	"strings"
	"testing"
)

// FuzzURLPolicy: whatever a ping reply hands out, an accepted URL is https,
// carries no credentials and is on an allowed host.
func FuzzURLPolicy(f *testing.F) {
	for _, s := range []string{
		"https://a.example.org/post", "http://a.example.org/", "https://evil.com/a.example.org",
		"https://a.example.org.evil.com/", "https://user@a.example.org/", "//a.example.org/x",
		"HTTPS://A.EXAMPLE.ORG:8443/x?y=z", "https://[::1]/", "https://a.example.org%2f@evil/", "",
	} {
		f.Add(s)
	}
	p := URLPolicy{AllowedHosts: []string{"*.example.org"}}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := p.Check("HL7POSTURL", raw)
		if err != nil {
			if !errors.Is(err, ErrRefusedURL) && !errors.Is(err, ErrTransport) {
				t.Fatalf("Check(%q) = %v: neither refused nor transport", raw, err)
			}
			return
		}
		if !strings.EqualFold(u.Scheme, "https") || u.User != nil {
			t.Fatalf("Check(%q) accepted scheme %q user %v", raw, u.Scheme, u.User)
		}
		host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
		if ok, _ := path.Match("*.example.org", host); !ok {
			t.Fatalf("Check(%q) accepted host %q", raw, host)
		}
	})
}

var pmVersion = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$`)

// FuzzFormatPMVersion: any version string becomes four numbers.
func FuzzFormatPMVersion(f *testing.F) {
	for _, s := range []string{"v1.4.2", "1.4.2-3-gabcdef", "dev", "", "1..2", "v", "1.2.3.4.5+x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if got := FormatPMVersion(v); !pmVersion.MatchString(got) {
			t.Fatalf("FormatPMVersion(%q) = %q", v, got)
		}
	})
}
