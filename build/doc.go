// Package build holds the release files of hl7edge: the hardened systemd
// unit, the default configuration installed to /etc, the Debian maintainer
// scripts, the nfpm recipe and the scripts behind `make package` and
// `make qemu-selftest`. It has no code; its tests check those files against
// each other and against the configuration loader, and (without -short and
// without -race) build, package, install in a throw-away overlay and run the
// ARM smoke tests.
package build
