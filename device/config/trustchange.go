package config

import "slices"

// TrustChanges lists how next would change what the gateway trusts or how
// it protects what it keeps: the keys that sign privileged commands and
// firmware (trust.keys), where firmware images live and whom their download
// server must prove to be (firmware.dir, firmware.ca_file), and the spool's
// encryption at rest (spool.encryption_key_file). A remote config-apply is
// signed by one of the current keys; letting it add keys would let one
// leaked key mint others that outlive its own revocation, and letting it
// drop the encryption key would undo at-rest protection from afar. Like
// RemoteRefusals, such changes are for a local operator only.
func TrustChanges(cur, next *Config) []string {
	var out []string
	if !slices.Equal(cur.Trust.Keys, next.Trust.Keys) {
		out = append(out, "trust.keys changed (the keys that sign privileged commands and firmware)")
	}
	if cur.Firmware.Dir != next.Firmware.Dir {
		out = append(out, "firmware.dir changed to "+next.Firmware.Dir)
	}
	if cur.Firmware.CAFile != next.Firmware.CAFile {
		out = append(out, "firmware.ca_file changed (other roots for image downloads)")
	}
	if cur.Spool.EncryptionKeyFile != next.Spool.EncryptionKeyFile {
		out = append(out, "spool.encryption_key_file changed (encryption at rest)")
	}
	return out
}
