package trust

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"aead.dev/minisign"
)

// Signer holds an operator's minisign secret key. It runs on the
// operator's machine (`hl7edge command sign`), never on a gateway.
type Signer struct {
	key minisign.PrivateKey
}

// LoadSigner reads a minisign secret key file. An encrypted key (the
// default of `minisign -G`) is decrypted with the password password returns;
// an unencrypted one (`minisign -G -W`) needs none.
func LoadSigner(path string, password func() (string, error)) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	s := &Signer{}
	if !minisign.IsEncrypted(b) {
		if err := s.key.UnmarshalText(b); err != nil {
			return nil, fmt.Errorf("secret key %s: %w", path, err)
		}
		return s, nil
	}
	pw, err := password()
	if err != nil {
		return nil, fmt.Errorf("secret key %s is encrypted: %w", path, err)
	}
	if s.key, err = minisign.DecryptKey(pw, b); err != nil {
		return nil, fmt.Errorf("secret key %s: wrong password or not a minisign secret key: %w", path, err)
	}
	return s, nil
}

// KeyID is the key's ID as minisign prints it.
func (s *Signer) KeyID() string { return KeyID(s.key.ID()) }

// Sign returns the text of a prehashed ("ED") minisign signature of msg,
// the same as `minisign -S` writes.
func (s *Signer) Sign(msg []byte, trustedComment string) []byte {
	r := minisign.NewReader(bytes.NewReader(msg))
	_, _ = io.Copy(io.Discard, r)
	sig := r.SignWithComments(s.key, trustedComment, "signature from hl7edge secret key "+s.KeyID())
	if !bytes.HasSuffix(sig, []byte("\n")) {
		sig = append(sig, '\n') // as the minisign tool writes its .minisig files
	}
	return sig
}

// GenerateSigner makes a new key pair (tests, and operators without the
// minisign tool) and returns the signer and the public key line for
// trust.keys.
func GenerateSigner() (*Signer, string, error) {
	pub, priv, err := minisign.GenerateKey(nil)
	if err != nil {
		return nil, "", fmt.Errorf("generate key: %w", err)
	}
	txt, err := pub.MarshalText()
	if err != nil {
		return nil, "", err
	}
	// MarshalText writes the .pub file: a comment line, then the key.
	lines := strings.Split(strings.TrimSpace(string(txt)), "\n")
	return &Signer{key: priv}, lines[len(lines)-1], nil
}
