package firmware

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/pipeline/throwawayca"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/pipeline/vocab/units"
)

// TestCompareVersions: releases are ordered by their numbers, a
// pre-release below its release, build metadata ignored; what is not
// a release number cannot be ordered.
func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
		ok   bool
	}{
		{"1.4.2", "1.4.2", 0, true},
		{"0.9.0", "1.4.2", -1, true},
		{"1.10.0", "1.9.9", 1, true},
		{"v2.0", "2.0.0", 0, true},
		{"2.0.0-rc.1", "2.0.0", -1, true},
		{"2.0.0-rc.2", "2.0.0-rc.10", -1, true},
		{"2.0.0-alpha", "2.0.0-rc.1", -1, true},
		{"2.0.0+build.7", "2.0.0", 0, true},
		{"1.5-dev", "2.0.0-test", -1, true},
		{"dev", "1.0.0", 0, false},
		{"1.0.0", "nightly-2026", 0, false},
	} {
		got, ok := compareVersions(c.a, c.b)
		if got != c.want || ok != c.ok {
			t.Errorf("compareVersions(%q, %q) = %d, %v; want %d, %v", c.a, c.b, got, ok, c.want, c.ok)
		}
	}
}

// fwServer serves one signed image over HTTPS with a CA made here.
type fwServer struct {
	url, caFile, sum, sig string
	keys                  *trust.Keys
}

func newFWServer(t *testing.T) fwServer {
	t.Helper()
	signer, pub, err := trust.GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := trust.ParseKeys([]string{pub})
	ca, _ := throwawayca.NewCA("fw order CA")
	leaf, _ := ca.Issue("127.0.0.1", "127.0.0.1")
	img := []byte("#!/bin/sh\necho image\n")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(img) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(img)
	return fwServer{url: srv.URL + "/img", caFile: caFile, sum: hex.EncodeToString(sum[:]), sig: string(signer.Sign(img, "t")), keys: keys}
}

func (s fwServer) update(t *testing.T, dir, running, version string, allowDowngrade bool) error {
	t.Helper()
	cfg := Config{Dir: dir, CAFile: s.caFile, Trial: units.Duration(time.Minute), MaxBytes: 4 << 20}
	m := New(Options{Config: cfg, Keys: s.keys, Version: running, Snapshot: func() health.Snapshot { return health.NewRegistry("gw", "1", nil).Snapshot() }})
	args := map[string]any{"url": s.url, "version": version, "sha256": s.sum, "minisig": s.sig}
	if allowDowngrade {
		args["allow_downgrade"] = true
	}
	raw, _ := json.Marshal(args)
	_, _, err := m.Update(context.Background(), "c1", raw)
	return err
}

// TestUpdateVersionOrder: an image older than the running version is
// refused unless the signed command says allow_downgrade; so is one whose
// version cannot be ordered against a release.
func TestUpdateVersionOrder(t *testing.T) {
	t.Setenv(EnvImage, "")
	s := newFWServer(t)
	if err := s.update(t, filepath.Join(t.TempDir(), "fw"), "1.4.2", "0.9.0", false); err == nil || !strings.Contains(err.Error(), "allow_downgrade") {
		t.Errorf("0.9.0 over a running 1.4.2: %v, want refused naming allow_downgrade", err)
	}
	if err := s.update(t, filepath.Join(t.TempDir(), "fw"), "1.4.2", "nightly", false); err == nil || !strings.Contains(err.Error(), "allow_downgrade") {
		t.Errorf("an unordered version over a running 1.4.2: %v, want refused naming allow_downgrade", err)
	}
	if err := s.update(t, filepath.Join(t.TempDir(), "fw"), "1.4.2", "0.9.0", true); err != nil {
		t.Errorf("0.9.0 with allow_downgrade: %v", err)
	}
	if err := s.update(t, filepath.Join(t.TempDir(), "fw"), "1.4.2", "1.5.0", false); err != nil {
		t.Errorf("1.5.0 over 1.4.2: %v", err)
	}
	if err := s.update(t, filepath.Join(t.TempDir(), "fw"), "dev", "1.5.0", false); err != nil {
		t.Errorf("a release over a development build: %v", err)
	}
}

// TestUpdateFollowsNoSymlink: a `.download-<version>` planted in
// firmware.dir as a symbolic link to another file is not followed: that
// file keeps its content and mode, and the staged image is a regular file
// in firmware.dir.
func TestUpdateFollowsNoSymlink(t *testing.T) {
	t.Setenv(EnvImage, "")
	s := newFWServer(t)
	dir := filepath.Join(t.TempDir(), "fw")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(elsewhere, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(dir, downloadPrefix+"2.0.0")); err != nil {
		t.Fatal(err)
	}
	err := s.update(t, dir, "1.4.2", "2.0.0", false)
	if b, _ := os.ReadFile(elsewhere); string(b) != "precious\n" {
		t.Errorf("the planted link was followed: its target now holds %q", b)
	}
	if fi, _ := os.Stat(elsewhere); fi.Mode().Perm() != 0o600 {
		t.Errorf("the planted link's target was chmodded to %v", fi.Mode().Perm())
	}
	if err != nil {
		t.Fatalf("update after the planted link: %v", err)
	}
	fi, err := os.Lstat(filepath.Join(dir, imagePrefix+"2.0.0"))
	if err != nil || !fi.Mode().IsRegular() {
		t.Errorf("staged image: %v %v, want a regular file", fi, err)
	}
}

// TestExecImageRunsOnlyRegularFiles: an image name in the state that is a
// symbolic link in firmware.dir is not started.
func TestExecImageRunsOnlyRegularFiles(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "not-an-image")
	if err := os.WriteFile(target, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, imagePrefix+"9.9.9")); err != nil {
		t.Fatal(err)
	}
	if err := execImage(dir, imagePrefix+"9.9.9"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("exec of a linked image: %v, want refused as not a regular file", err)
	}
}
