#!/usr/bin/env bash
# Runs go test and ends with one line that says how it went, so that a CI
# log can be read from its last line.
set -uo pipefail
start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
go test -count=1 -timeout 30m "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
ok=$(grep -c '^ok ' "$log" || true)
failed=$(grep -c '^FAIL[[:space:]]' "$log" || true)
secs=$(( $(date +%s) - start ))
if [ "$status" -eq 0 ]; then
	echo "go test: PASS — $ok packages ok in ${secs}s"
else
	echo "go test: FAIL — $failed packages failed, $ok ok, in ${secs}s (exit $status)"
fi
exit "$status"
