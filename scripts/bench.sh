#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# make bench: the hermetic throughput benchmarks (./integration, which write
# bench/results.md), then the Kubernetes ones (./e2e with tags e2e,bench:
# port-forward throughput against kubectl port-forward, and mirrord exec
# startup), which add their section to the same file. The e2e cluster is
# started when it is not running (and stopped again afterwards); when it
# cannot be started, the Kubernetes benchmarks are skipped with the reason.
#
#   BENCH_E2E=0   skip the Kubernetes benchmarks
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
source "$REPO/e2e/cluster/common.sh"

say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

# ensure_kubectl builds kubectl alone (the harness builds it with the other
# Kubernetes binaries; this spares rebuilding all of them when only kubectl
# is missing from the cache). Same module, version and stamps as build.sh.
ensure_kubectl() {
	[[ -x $KUBECTL ]] && return 0
	say "Building kubectl $K8S_VERSION into $K8S_BIN"
	local minor ld p
	minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	ld="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
		ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	mkdir -p "$K8S_BIN"
	(cd "$E2E_ROOT/tools/k8s" && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "$ld" \
		-o "$KUBECTL.tmp" k8s.io/kubernetes/cmd/kubectl)
	mv "$KUBECTL.tmp" "$KUBECTL"
}

status=0
say "Hermetic benchmarks (./integration)"
go test -tags bench -run TestBench -count=1 -v -timeout 20m ./integration || status=$?

kube_benchmarks() {
	local was_running=0 rc=0
	pid_of kube-apiserver >/dev/null && was_running=1
	say "Kubernetes benchmarks (./e2e, tags e2e,bench): starting the e2e cluster if needed"
	if [[ $(id -u) -ne 0 ]]; then
		warn "skipping the Kubernetes benchmarks: the e2e cluster needs root"
		return 0
	fi
	if ! ensure_kubectl; then
		warn "skipping the Kubernetes benchmarks: kubectl $K8S_VERSION could not be built (see above)"
		return 0
	fi
	if ! "$REPO/e2e/cluster/up.sh" >/dev/null; then
		warn "skipping the Kubernetes benchmarks: the e2e cluster could not be started (see above)"
		((was_running)) || "$REPO/e2e/cluster/down.sh" >/dev/null 2>&1 || true
		return 0
	fi
	E2E_KUBECONFIG=$KUBECONFIG_OUT E2E_KUBECTL=$KUBECTL \
		go test -tags e2e,bench -run '^TestBench' -count=1 -v -timeout 20m ./e2e || rc=$?
	if ((!was_running)); then
		say "Stopping the e2e cluster this run started"
		"$REPO/e2e/cluster/down.sh" || rc=1
	fi
	return "$rc"
}

if [[ ${BENCH_E2E:-1} == 0 ]]; then
	warn "skipping the Kubernetes benchmarks: BENCH_E2E=0"
else
	kube_benchmarks || status=$?
fi
say "Charts of bench/results.md (bench/charts)"
go run ./bench/cmd/charts || status=1
say "make bench finished ($([[ $status == 0 ]] && echo PASS || echo FAIL)); results in bench/results.md"
exit "$status"
