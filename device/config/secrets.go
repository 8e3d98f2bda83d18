package config

import (
	"fmt"
	"os"

	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/webservice"
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
	check("mqtt.password_file", c.MQTT.PasswordFile)
	check("mqtt.key_file", c.MQTT.KeyFile)
	block := func(who string, b any) {
		switch b := b.(type) {
		case *webservice.SourceConfig:
			check(who+" password_file", b.PasswordFile)
			check(who+" key_file", b.KeyFile)
		case *webservice.DestinationConfig:
			check(who+" password_file", b.PasswordFile)
			check(who+" key_file", b.KeyFile)
		case *mllp.ListenerConfig:
			check(who+" tls.key_file", b.TLS.KeyFile)
		case *mllp.DestinationConfig:
			check(who+" tls.key_file", b.TLS.KeyFile)
		}
	}
	for _, s := range c.Sources {
		block(fmt.Sprintf("source %q", s.Name), s.Config)
	}
	for _, d := range c.Destinations {
		block(fmt.Sprintf("destination %q", d.Name), d.Config)
	}
	return out
}
