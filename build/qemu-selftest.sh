#!/usr/bin/env bash
# ARM smoke test on any machine with Debian's qemu-user-static:
#  1. the arm64 release binary's `hl7edge selftest` (spool write, close,
#     reopen, read back; MLLP loopback) passes under qemu-aarch64-static;
#  2. a 32-bit ARM build (GOARCH=arm GOARM=7) refuses to open a spool, with
#     the explanation (Badger's ristretto allocator computes int << 32).
# Each part is skipped, with a message, when its emulator is not installed.
#
#   build/qemu-selftest.sh bin/hl7edge-linux-arm64
set -euo pipefail
cd "$(dirname "$0")/.."
arm64=${1:-bin/hl7edge-linux-arm64}

if command -v qemu-aarch64-static >/dev/null; then
	if [ ! -x "$arm64" ]; then
		echo "qemu-selftest: $arm64 is missing: run make cross first" >&2
		exit 1
	fi
	echo "qemu-selftest: $arm64 selftest under qemu-aarch64-static"
	out=$(qemu-aarch64-static "$arm64" selftest 2>&1) || {
		echo "$out" | sed 's/^/  /'
		echo "qemu-selftest: FAIL: the arm64 selftest failed" >&2
		exit 1
	}
	echo "$out" | sed 's/^/  /'
	if ! grep -q '^selftest: PASS' <<<"$out"; then
		echo "qemu-selftest: FAIL: the arm64 selftest did not print 'selftest: PASS'" >&2
		exit 1
	fi
else
	echo "qemu-selftest: arm64 part skipped: qemu-aarch64-static is not on PATH (apt-get install qemu-user-static)"
fi

if command -v qemu-arm-static >/dev/null; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	echo "qemu-selftest: building linux/arm (GOARM=7), which must refuse to open a spool"
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 \
		"${GO:-go}" build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=${VERSION:-dev}" -o "$tmp/hl7edge-linux-arm" ./cmd/hl7edge
	echo "qemu-selftest: linux/arm selftest under qemu-arm-static"
	if out=$(qemu-arm-static "$tmp/hl7edge-linux-arm" selftest 2>&1); then
		echo "$out" | sed 's/^/  /'
		echo "qemu-selftest: FAIL: the 32-bit build opened a spool; it must refuse (Badger corrupts data there)" >&2
		exit 1
	fi
	echo "$out" | sed 's/^/  /'
	if ! grep -q 'ristretto' <<<"$out" || ! grep -q '32-bit' <<<"$out"; then
		echo "qemu-selftest: FAIL: the 32-bit build failed without the ristretto explanation" >&2
		exit 1
	fi
else
	echo "qemu-selftest: 32-bit part skipped: qemu-arm-static is not on PATH (apt-get install qemu-user-static)"
fi
echo "qemu-selftest: OK"
