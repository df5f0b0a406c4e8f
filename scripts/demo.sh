#!/usr/bin/env bash
# make demo: a local Kubernetes cluster with a sample app, then mirrord
# running a local command in the context of the app's deployment.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Starting the local cluster (first run builds Kubernetes from source: ~15 min; later runs: seconds)"
e2e/cluster/up.sh >/dev/null
KUBECONFIG_FILE="${XDG_CACHE_HOME:-$HOME/.cache}/mirrord-e2e/kubeconfig"
KUBECTL="${XDG_CACHE_HOME:-$HOME/.cache}/mirrord-e2e/k8s-v1.33.13/bin/kubectl"

say "Building mirrord"
make -s build

say "The cluster runs deployment py-serv and a ClusterIP-only service 'backend':"
"$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" get deploy,svc -n default

say "Without mirrord, this machine cannot resolve 'backend' nor has py-serv's environment:"
sh -c 'echo "APP_GREETING=${APP_GREETING:-<unset>}"; getent hosts backend.default.svc.cluster.local || echo "backend.default.svc.cluster.local: not found"'

say "With mirrord exec -t deploy/py-serv, the same local command runs in py-serv's context:"
set -x
bin/mirrord exec --kubeconfig "$KUBECONFIG_FILE" --agent-image ghcr.io/mirrord-go/mirrord:e2e \
	-t deploy/py-serv -n default -- sh -c '
	echo "APP_GREETING=$APP_GREETING   (the pod'"'"'s environment)"
	echo "hostname: $(hostname)   (the pod'"'"'s hostname)"
	getent hosts backend.default.svc.cluster.local
	echo "GET http://backend:8080/ -> $(curl -sS --max-time 10 http://backend:8080/ | head -c 200)"'
set +x
say "Done. Stop the cluster with: make e2e-down"
