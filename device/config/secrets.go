package config

import (
	"fmt"
	"os"

	"github.com/hl7edge/hl7edge/pipeline/component"
)

// SecretWarnings names every secret file of the configuration (passwords,
// the spool's encryption key, TLS private keys) that users other than its
// owner and group can read, with the fix. The configuration stays valid:
// the file may be on its way to the right mode. `config check` prints these
// and the daemon logs them at start.
func (c *Config) SecretWarnings() []string {
	var out []string
	check := func(key, path string) {
		if path == "" {
			return
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm()&0o004 == 0 {
			return
		}
		out = append(out, fmt.Sprintf("%s %s is readable by every user on this machine (mode %04o); chmod 0600 it (0640 with the hl7edge group)",
			key, path, fi.Mode().Perm()))
	}
	check("spool.encryption_key_file", c.Spool.EncryptionKeyFile)
	files := func(prefix string, r component.Reach) {
		for _, f := range r.Files {
			if f.Secret {
				check(prefix+f.Key, f.Path)
			}
		}
	}
	files("mqtt.", c.MQTT.Reach())
	for _, s := range c.Sources {
		if r, ok := s.Config.(component.Reacher); ok {
			files(fmt.Sprintf("source %q ", s.Name), r.Reach())
		}
	}
	for _, d := range c.Destinations {
		if r, ok := d.Config.(component.Reacher); ok {
			files(fmt.Sprintf("destination %q ", d.Name), r.Reach())
		}
	}
	return out
}
