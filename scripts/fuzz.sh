#!/usr/bin/env bash
# Runs each fuzz target for a while, one at a time (go test takes one -fuzz
# target per run), and prints a line per target and a closing summary.
#
#   scripts/fuzz.sh                       every target, FUZZTIME each (6s)
#   FUZZTIME=10m scripts/fuzz.sh FuzzFilteredSteal FuzzConfig
#
# A failing input is written by go test to the package's
# testdata/fuzz/FuzzXxx/ (commit it with the fix: it becomes a seed), and
# the run fails. FUZZMINIMIZETIME bounds the minimization of each new
# input (go's default, 60s, would take most of a short run).
set -uo pipefail
cd "$(dirname "$0")/.."

fuzztime=${FUZZTIME:-6s}
minimize=${FUZZMINIMIZETIME:-1s}

# package and target: what the agent parses from the network on a stolen or
# mirrored port, the config loader, the protocol and the HTTP filters.
targets=(
	"./agent FuzzFilteredSteal"
	"./agent FuzzFilteredStealH2"
	"./agent FuzzFilteredMirror"
	"./httpfilter FuzzFilter"
	"./httpfilter FuzzBuild"
	"./config FuzzConfig"
	"./config FuzzEnvConfig"
	"./protocol FuzzRead"
	"./protocol FuzzDecode"
)

want=("$@")
for w in "${want[@]}"; do
	if [[ " ${targets[*]} " != *" $w "* ]]; then
		echo "fuzz: no target $w (targets: $(printf '%s\n' "${targets[@]}" | cut -d' ' -f2 | tr '\n' ' '))" >&2
		exit 2
	fi
done
start=$(date +%s)
ran=0
failed=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	if [ ${#want[@]} -gt 0 ] && [[ " ${want[*]} " != *" $name "* ]]; then
		continue
	fi
	corpus="$pkg/testdata/fuzz/$name"
	before=$(ls "$corpus" 2>/dev/null | sort)
	t0=$(date +%s)
	go test -run='^$' -fuzz="^$name\$" -fuzztime="$fuzztime" -fuzzminimizetime="$minimize" "$pkg" >"$log" 2>&1
	status=$?
	secs=$(( $(date +%s) - t0 ))
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
	new=$(comm -13 <(echo "$before") <(ls "$corpus" 2>/dev/null | sort))
	ran=$((ran + 1))
	if [ "$status" -ne 0 ] && [ -z "$new" ] && grep -q '^    context deadline exceeded$' "$log" && ! grep -q 'Failing input\|panic:' "$log"; then
		# go1.26's fuzz coordinator can fail a run as its -fuzztime
		# ends, with no failing input (go.dev/issue/75804, fixed in
		# go1.27): not a finding.
		status=0
		note=" (go's fuzz coordinator misreported the end of the run: go.dev/issue/75804)"
	else
		note=""
	fi
	if [ "$status" -eq 0 ]; then
		echo "fuzz: $name ($pkg): ok — ${execs:-0} inputs in ${secs}s$note"
	else
		echo "fuzz: $name ($pkg): FAIL after ${secs}s"
		sed 's/^/    /' "$log" | grep -v '^    fuzz: elapsed' | tail -40
		if [ -n "$new" ]; then
			echo "    failing input: $corpus/$new (rerun: go test -run='$name/$new' $pkg)"
		fi
		failed+=("$name")
	fi
done
secs=$(( $(date +%s) - start ))
if [ ${#failed[@]} -eq 0 ]; then
	echo "fuzz: PASS — $ran targets, $fuzztime each, in ${secs}s"
else
	echo "fuzz: FAIL — ${failed[*]} (of $ran targets) in ${secs}s"
	exit 1
fi
