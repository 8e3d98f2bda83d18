// Package trust decides whether bytes come from the fleet's operators: it
// checks minisign signatures (as made by the stock minisign tool, prehashed
// "ED" and legacy "Ed") against the public keys of `trust.keys`, and opens
// the signed envelopes in which privileged commands travel over MQTT.
//
// A broker password or ACL is one wall; a leaked password must not be enough
// to send patient data elsewhere or to run code on a gateway, so the
// commands that can do that are signed by a key that never leaves the
// operator.
package trust

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"aead.dev/minisign"
)

// Config is the `trust:` block of the configuration file.
type Config struct {
	// Keys are minisign public keys: the base64 line of a minisign .pub
	// file ("RW..."), optionally with its "untrusted comment:" line before it.
	Keys []string `yaml:"keys"`
}

// Validate checks every key; every mistake is reported.
func (c Config) Validate() error {
	_, err := ParseKeys(c.Keys)
	return err
}

// Keys are the trusted public keys. The zero value trusts nothing.
type Keys struct {
	keys []minisign.PublicKey
}

// ParseKeys reads minisign public keys; an empty list is valid and trusts nothing.
func ParseKeys(lines []string) (*Keys, error) {
	k := &Keys{}
	var errs []error
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if _, after, ok := strings.Cut(l, "\n"); ok && strings.HasPrefix(l, "untrusted comment:") {
			l = strings.TrimSpace(after)
		}
		var pk minisign.PublicKey
		if err := pk.UnmarshalText([]byte(l)); err != nil {
			errs = append(errs, fmt.Errorf("trust.keys[%d]: not a minisign public key (%v); paste the second line of the .pub file that `minisign -G` wrote, the one starting RW", i, err))
			continue
		}
		k.keys = append(k.keys, pk)
	}
	return k, errors.Join(errs...)
}

// Len is how many keys are trusted.
func (k *Keys) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// IDs lists the trusted key IDs as minisign prints them.
func (k *Keys) IDs() []string {
	var out []string
	if k == nil {
		return out
	}
	for _, pk := range k.keys {
		out = append(out, KeyID(pk.ID()))
	}
	return out
}

// KeyID formats a key ID as minisign prints it.
func KeyID(id uint64) string { return fmt.Sprintf("%016X", id) }

// Errors of Verify, for errors.Is.
var (
	ErrNoSignature = errors.New("no minisign signature")
	ErrForeignKey  = errors.New("signed by a key that is not in trust.keys")
	ErrBadSig      = errors.New("signature does not match")
)

// Verify checks that sig (the text of a .minisig file) is a signature of
// exactly msg by one of the keys. It returns the signer's key ID, and the
// trusted comment, which minisign signs too.
func (k *Keys) Verify(msg []byte, sig string) (keyID, trustedComment string, err error) {
	if strings.TrimSpace(sig) == "" {
		return "", "", ErrNoSignature
	}
	var s minisign.Signature
	if err := s.UnmarshalText([]byte(sig)); err != nil {
		return "", "", fmt.Errorf("%w: the text is not a minisign signature (%v); send the whole .minisig file, all four lines", ErrNoSignature, err)
	}
	keyID = KeyID(s.KeyID)
	if k == nil {
		return keyID, "", fmt.Errorf("%w: key %s; this gateway trusts no keys", ErrForeignKey, keyID)
	}
	for _, pk := range k.keys {
		if pk.ID() != s.KeyID {
			continue
		}
		// minisign.Verify checks both the signature of the bytes (BLAKE2b-512
		// prehashed for "ED") and the global signature over the trusted comment.
		if !minisign.Verify(pk, msg, []byte(sig)) {
			return keyID, "", fmt.Errorf("%w: key %s is trusted but the signature is not of these bytes (altered, or a signature of something else)", ErrBadSig, keyID)
		}
		return keyID, s.TrustedComment, nil
	}
	return keyID, "", fmt.Errorf("%w: key %s; trusted: %s", ErrForeignKey, keyID, strings.Join(k.IDs(), ", "))
}

// VerifyFile is Verify for a file too large to hold in memory: a prehashed
// ("ED", the minisign tool's default) signature is checked while the file
// streams through BLAKE2b-512; a legacy "Ed" one needs the whole file, so it
// is refused above maxLegacy bytes.
func (k *Keys) VerifyFile(path, sig string, maxLegacy int64) (keyID, trustedComment string, err error) {
	if strings.TrimSpace(sig) == "" {
		return "", "", ErrNoSignature
	}
	var s minisign.Signature
	if err := s.UnmarshalText([]byte(sig)); err != nil {
		return "", "", fmt.Errorf("%w: the text is not a minisign signature (%v); send the whole .minisig file, all four lines", ErrNoSignature, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return KeyID(s.KeyID), "", err
	}
	defer f.Close()
	if s.Algorithm == minisign.EdDSA {
		b, err := io.ReadAll(io.LimitReader(f, maxLegacy+1))
		if err != nil {
			return KeyID(s.KeyID), "", err
		}
		if int64(len(b)) > maxLegacy {
			return KeyID(s.KeyID), "", fmt.Errorf("%w: a legacy (minisign -l) signature of a file over %d bytes; sign it without -l", ErrBadSig, maxLegacy)
		}
		return k.Verify(b, sig)
	}
	r := minisign.NewReader(f)
	if _, err := io.Copy(io.Discard, r); err != nil {
		return KeyID(s.KeyID), "", err
	}
	keyID = KeyID(s.KeyID)
	for _, pk := range k.keysOrNil() {
		if pk.ID() != s.KeyID {
			continue
		}
		if !r.Verify(pk, []byte(sig)) {
			return keyID, "", fmt.Errorf("%w: key %s is trusted but the signature is not of this file (altered, or a signature of something else)", ErrBadSig, keyID)
		}
		return keyID, s.TrustedComment, nil
	}
	return keyID, "", fmt.Errorf("%w: key %s; trusted: %s", ErrForeignKey, keyID, strings.Join(k.IDs(), ", "))
}

func (k *Keys) keysOrNil() []minisign.PublicKey {
	if k == nil {
		return nil
	}
	return k.keys
}
