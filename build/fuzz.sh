#!/usr/bin/env bash
# Runs every Fuzz target in the module for a short time each. Go runs one
# fuzz target per invocation, so this finds them and loops.
set -euo pipefail
fuzztime=${1:-4s}
cd "$(dirname "$0")/.."
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
  pkg=./$(dirname "${f#./}")
  grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //' | while read -r fn; do
    echo "fuzz $pkg $fn ($fuzztime)"
    go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" "$pkg" > /tmp/hl7edge-fuzz.log 2>&1 || { cat /tmp/hl7edge-fuzz.log; exit 1; }
  done
done
