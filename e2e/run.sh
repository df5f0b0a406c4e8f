#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# run.sh — `make e2e`: bring up (or reuse) the e2e cluster, then run the Go
# e2e tests (build tag e2e) against it. Ctrl-C tears the cluster down.
#
#   E2E_TEST_FLAGS  extra `go test` flags (default: -v), e.g. "-run TestSmoke/dns"
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/cluster/common.sh"

# shellcheck disable=SC2317 # (called by the trap)
on_interrupt() {
	trap - INT TERM
	warn "interrupted: tearing the cluster down"
	"$HERE/cluster/down.sh" || true
	exit 130
}
trap on_interrupt INT TERM

main() {
	local start status=0 lockfd
	# One e2e run at a time on this machine, whatever the checkout: the
	# tests share the fixture (py-serv's port 80 under steal, its agents)
	# and some restart the API server. The kernel drops the lock when
	# this run ends, however it ends. (A different file from the lock
	# that people take around the whole command with flock -o, so that
	# both can be used.)
	exec {lockfd}>/run/mirrord-e2e.tests.lock
	if ! flock -n "$lockfd"; then
		log "another e2e run holds /run/mirrord-e2e.tests.lock; waiting for it"
		flock "$lockfd"
	fi
	start=$(now_s)
	"$HERE/cluster/up.sh" >/dev/null

	section "e2e tests (go test -tags e2e ./e2e/...)"
	cd "$REPO_ROOT"
	# shellcheck disable=SC2086 # E2E_TEST_FLAGS is a list of flags
	E2E_KUBECONFIG=$KUBECONFIG_OUT E2E_KUBECTL=$KUBECTL \
		go test -tags e2e -count=1 -timeout 20m ${E2E_TEST_FLAGS:--v} ./e2e/... || status=$?
	section "make e2e finished in $(elapsed "$start") ($([[ $status == 0 ]] && echo PASS || echo FAIL))"
	return "$status"
}

# (One line: bash reads a script as it runs it, so nothing may follow main.)
main "$@"; exit
