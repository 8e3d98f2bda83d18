#!/usr/bin/env bash
# Builds the .deb of each architecture given from bin/hl7edge-linux-<arch>
# (make cross) with nfpm, run from go.mod's tool dependencies:
#
#   VERSION=$(git describe --tags --always --dirty) build/package.sh dist arm64 amd64
#
# The package version is VERSION made into a Debian version: tag v1.2.3
# gives 1.2.3, v1.2.3-4-gabc1234-dirty gives 1.2.3+4.gabc1234.dirty,
# v1.3.0-rc1 gives 1.3.0~rc1 (before 1.3.0), and an untagged commit abc1234
# gives 0.0.0~gitabc1234 (before any release).
# SOURCE_DATE_EPOCH (default: the commit time) dates every file, so one commit
# gives byte-identical packages.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
	echo "usage: VERSION=... build/package.sh OUTDIR ARCH...    build the packages" >&2
	echo "       build/package.sh --deb-version VERSION          print the package version" >&2
	exit 2
fi

debversion() {
	local v=$1 base rest sep
	if [[ $v =~ ^v([0-9]+(\.[0-9]+)*)(-(.*))?$ ]]; then
		base=${BASH_REMATCH[1]}
		rest=${BASH_REMATCH[4]}
		sep=+
		if [[ $rest =~ ^(rc|alpha|beta|pre) ]]; then
			sep='~'
		fi
		if [ -n "$rest" ]; then
			echo "$base$sep${rest//-/.}"
		else
			echo "$base"
		fi
	else
		echo "0.0.0~git${v//-/.}"
	fi | tr -c 'A-Za-z0-9.+~\n' '.'
}

if [ "$1" = --deb-version ]; then
	debversion "$2"
	exit 0
fi
out=$1
shift
HL7EDGE_DEB_VERSION=$(debversion "${VERSION:-dev}")
export HL7EDGE_DEB_VERSION
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH

mkdir -p "$out"
for arch in "$@"; do
	bin=bin/hl7edge-linux-$arch
	if [ ! -x "$bin" ]; then
		echo "package: $bin is missing: run make cross first" >&2
		exit 1
	fi
	deb=$out/hl7edge_${HL7EDGE_DEB_VERSION}_$arch.deb
	HL7EDGE_ARCH=$arch "${GO:-go}" tool nfpm package --config build/nfpm.yaml --packager deb --target "$deb"
done
