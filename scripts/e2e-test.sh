#!/usr/bin/env bash
# make test's e2e part, which says in its headers which cluster runs what.
#
# Every e2e test runs on the processes cluster (one node, dual-stack: the
# only one here with IPv6 and an API server the tests can restart). Then the
# tests only a multi-node cluster can run (TestTwoNodes: steal and mirror
# with the agent on the worker's node, a Service with endpoints on both
# nodes, cross-node pod traffic, ls across nodes) run on the kind cluster
# (two nodes), built when missing: about 3 minutes cold on 2 cores on top of
# the processes cluster's Kubernetes build, under a minute from its cache.
# When this machine cannot run kind (its dockerd does not start: up.sh's
# exit status KIND_CANNOT_RUN) they are skipped, saying so; any other failure fails.
# E2E_KIND=0 skips kind.
#
# Usage: e2e-test.sh [SUMMARY_FILE] — the line naming the clusters it used
# also goes to SUMMARY_FILE (make test's closing line quotes it).
set -euo pipefail
cd "$(dirname "$0")/.."
summary_file=${1:-/dev/null}
summary() { echo "$1"; echo "$1" >"$summary_file"; }
kind_cannot_run=3 # KIND_CANNOT_RUN of e2e/cluster/kind.sh: up.sh's status when dockerd cannot start

echo "== e2e tests on the processes cluster (one node, dual-stack): every test"
E2E_CLUSTER=processes E2E_TEST_FLAGS="-count=1" e2e/run.sh

if [[ ${E2E_KIND:-1} == 0 ]]; then
	echo "== e2e on kind: skipped (E2E_KIND=0)"
	summary "e2e clusters: processes (every test; kind skipped by E2E_KIND=0)"
	exit 0
fi
echo "== e2e two-node tests on the kind cluster (a control plane and a worker)"
status=0
E2E_CLUSTER=kind E2E_TEST_FLAGS="-count=1 -v -run ^TestTwoNodes$" e2e/run.sh || status=$?
case $status in
0) summary "e2e clusters: processes (every test) and kind (two-node tests)" ;;
"$kind_cannot_run")
	echo "== e2e on kind: skipped — this machine cannot run the kind cluster (dockerd did not start; see above)"
	summary "e2e clusters: processes (every test; kind cannot run here)"
	;;
*) exit "$status" ;;
esac
