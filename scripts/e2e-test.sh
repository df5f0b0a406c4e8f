#!/usr/bin/env bash
# make test's e2e part, which says in its headers which cluster runs what.
#
# Every e2e test runs on the processes cluster (one node, dual-stack: the
# only one here with IPv6 and an API server the tests can restart). The
# tests only a multi-node cluster can run (TestTwoNodes: the agent on the
# worker's node, a Service with endpoints on both nodes, ls across nodes)
# then run on the kind cluster (two nodes) when this machine can run it
# without building it: its node image is cached from an earlier
# `E2E_CLUSTER=kind make e2e-cluster`. Building that image from nothing
# takes about 6 minutes more on 2 cores, which a cold `make test` cannot
# afford within its hour; E2E_KIND=1 builds it anyway, E2E_KIND=0 skips kind.
#
# Prints the clusters it used on its last line (for make test's summary).
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mirrord-e2e}
kind_mode=${E2E_KIND:-auto}

echo "== e2e tests on the processes cluster (one node, dual-stack): every test"
E2E_CLUSTER=processes E2E_TEST_FLAGS="-count=1" e2e/run.sh

run_kind=0
case $kind_mode in
1) run_kind=1 ;;
0) echo "== e2e on kind: skipped (E2E_KIND=0)" ;;
*)
	if compgen -G "$cache/kind-node-*/node-*.tar" >/dev/null; then
		run_kind=1
	else
		echo "== e2e on kind: skipped — no kind node image cached on this machine (E2E_KIND=1 builds one, about 6 minutes on 2 cores)"
	fi
	;;
esac
if ((run_kind)); then
	echo "== e2e two-node tests on the kind cluster (a control plane and a worker)"
	E2E_CLUSTER=kind E2E_TEST_FLAGS="-count=1 -v -run ^TestTwoNodes$" e2e/run.sh
	echo "e2e clusters: processes (every test) and kind (two-node tests)"
else
	echo "e2e clusters: processes (every test; kind not run)"
fi
