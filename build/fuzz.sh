#!/usr/bin/env bash
# Runs every Fuzz target in the module for a short budget each. Go runs one
# fuzz target per invocation, so this finds them and loops.
#
# The budget is a count of executions, not a duration: with a duration, Go
# 1.26's fuzz coordinator can report "context deadline exceeded" and fail a
# target whose worker is mid-call when the clock runs out, with no failing
# input (golang/go#75804, fixed in Go 1.27). A count has no deadline to race.
# Counts are sized to about 2-5 s per target on a 2-core machine; the slow
# targets (real timers or real goroutines per input) get smaller counts.
#
# FUZZTIME (a count like 200000x or a duration like 5m) overrides every
# target's budget, for a longer hunt by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

budget() {
  if [[ -n "${FUZZTIME:-}" ]]; then echo "$FUZZTIME"; return; fi
  case "$1" in
    FuzzReceiver) echo 500x ;;       # 20 ms of simulated line time per input
    FuzzReader) echo 8000x ;;        # a real MLLP connection per input
    FuzzParseSession) echo 15000x ;;
    FuzzLEDConfig) echo 25000x ;;
    *) echo 50000x ;;
  esac
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
  pkg=./$(dirname "${f#./}")
  grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //' | while read -r fn; do
    n=$(budget "$fn")
    echo "fuzz $pkg $fn ($n)"
    go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$n" "$pkg" >"$log" 2>&1 || { cat "$log"; exit 1; }
  done
done
