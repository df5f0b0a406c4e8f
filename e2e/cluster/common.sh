# shellcheck shell=bash
# Shared settings and helpers for the e2e cluster scripts. Sourced, not run.
#
# Layout on the machine:
#   $E2E_CACHE (~/.cache/mirrord-e2e)   built binaries and image tars, keyed by
#                                       version; survives `make e2e-down`
#   $E2E_STATE (/var/lib/mirrord-e2e)   the running cluster: etcd data, PKI,
#                                       kubelet root, containerd root (which
#                                       also keeps imported images), CNI, logs
#   $E2E_RUN   (/run/mirrord-e2e)       pid files, containerd's socket/state
# Everything the cluster creates on the host is named so that teardown can
# find it exactly: bridge mirrord-e2e0, node mirrord-e2e, containerd socket
# $E2E_RUN/containerd/containerd.sock.

# Versions. Changing one makes the next `make e2e-cluster` build it.
K8S_VERSION=v1.33.13     # 1.35 drops cgroup v1, which CI machines still use
ETCD_VERSION=v3.5.24
COREDNS_VERSION=v1.12.0
PAUSE_IMAGE=registry.k8s.io/pause:3.10
COREDNS_IMAGE=registry.k8s.io/coredns/coredns:${COREDNS_VERSION}
AGENT_IMAGE=${E2E_AGENT_IMAGE:-ghcr.io/mirrord-go/mirrord:e2e}
TESTAPP_IMAGE=ghcr.io/mirrord-go/e2e-testapp:e2e
BUSYBOX_IMAGE=ghcr.io/mirrord-go/e2e-busybox:e2e

# Network plan. 10.244/16 pods (this node uses the first /24), 10.96/16
# services. Both are only routed on this machine. Where this machine has
# IPv6 the cluster is dual-stack (IPv4 first, so every Service is IPv4
# unless it asks for IPv6): pods also get an address in fd00:10:244::/64,
# and a Service may have one in fd00:10:96::/112 — unique local addresses,
# again only routed here. E2E_IPV6=0 makes it IPv4-only.
POD_CIDR=10.244.0.0/16
NODE_POD_SUBNET=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
POD_CIDR6=fd00:10:244::/56
NODE_POD_SUBNET6=fd00:10:244::/64
SERVICE_CIDR6=fd00:10:96::/112
KUBERNETES_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
BRIDGE=mirrord-e2e0
NODE_NAME=mirrord-e2e
CLUSTER_DOMAIN=cluster.local
APISERVER_PORT=6443

E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)   # .../e2e
REPO_ROOT=$(cd "$E2E_ROOT/.." && pwd)
E2E_CACHE=${E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mirrord-e2e}
E2E_STATE=${E2E_STATE:-/var/lib/mirrord-e2e}
E2E_RUN=${E2E_RUN:-/run/mirrord-e2e}
# Which cluster: processes (default) or kind (see kind.sh).
E2E_CLUSTER=${E2E_CLUSTER:-processes}
case $E2E_CLUSTER in
processes) KUBECONFIG_OUT=${E2E_KUBECONFIG:-$E2E_CACHE/kubeconfig} ;;
kind) KUBECONFIG_OUT=${E2E_KUBECONFIG:-$E2E_CACHE/kind-kubeconfig} ;;
*) printf '\033[31merror:\033[0m E2E_CLUSTER=%s: want processes or kind\n' "$E2E_CLUSTER" >&2 && exit 1 ;;
esac
export E2E_CLUSTER

K8S_BIN=$E2E_CACHE/k8s-$K8S_VERSION/bin
ETCD_BIN=$E2E_CACHE/etcd-$ETCD_VERSION/bin
COREDNS_BIN=$E2E_CACHE/coredns-$COREDNS_VERSION/bin
TOOLS_BIN=$E2E_CACHE/tools/bin
IMAGES_DIR=$E2E_CACHE/images
KUBECTL=$K8S_BIN/kubectl

PKI=$E2E_STATE/pki
LOGS=$E2E_STATE/logs
CONTAINERD_SOCK=$E2E_RUN/containerd/containerd.sock

# The control plane processes, in start order. Teardown stops them in reverse.
COMPONENTS=(etcd kube-apiserver containerd kube-controller-manager kube-scheduler kubelet kube-proxy)

section() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
log() { printf '    %s\n' "$*" >&2; }
warn() { printf '\033[33mwarning:\033[0m %s\n' "$*" >&2; }
die() { die_status 1 "$@"; }
# die_status STATUS MESSAGE... is die with an exit status of its own.
die_status() {
	local status=$1
	shift
	printf '\033[31merror:\033[0m %s\n' "$*" >&2
	exit "$status"
}

# now_s prints seconds since the epoch with millisecond resolution, for timings.
now_s() { date +%s.%N | cut -c1-14; }
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1fs", b - a }'; }

require_root() {
	[[ $(id -u) -eq 0 ]] || die "the e2e cluster runs containerd, kubelet and iptables: run as root (or with sudo)"
}

# node_ip is the address the node registers with: the source address of the
# default route. It must be a real local address (kubelet rejects loopback);
# traffic to it never leaves the machine.
node_ip() {
	local dev
	# (awk reads all its input: an early exit would SIGPIPE `ip`, and
	# pipefail would turn that into a failure.)
	dev=$(ip -4 route show default | awk '!d { for (i = 1; i < NF; i++) if ($i == "dev") d = $(i + 1) } END { print d }')
	ip -4 -o addr show ${dev:+dev "$dev"} scope global | awk '!a { a = $4; sub("/.*", "", a) } END { print a }'
}

# dual_stack: true when the cluster gets IPv6 too (E2E_IPV6 is not 0 and
# the kernel has IPv6 on).
dual_stack() {
	[[ ${E2E_IPV6:-1} != 0 && $(cat /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null) == 0 ]]
}

# node_ip6 prints this machine's global IPv6 address on its default route's
# device, if it has one (the node then registers it too).
node_ip6() {
	local dev
	dev=$(ip -6 route show default | awk '!d { for (i = 1; i < NF; i++) if ($i == "dev") d = $(i + 1) } END { print d }')
	[[ -n $dev ]] || return 0
	ip -6 -o addr show dev "$dev" scope global | awk '!a { a = $4; sub("/.*", "", a) } END { print a }'
}

kctl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_OUT" "$@"; }
ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# pid_of NAME prints the pid of a component we started, if it still runs.
pid_of() {
	local f=$E2E_RUN/pids/$1.pid pid args
	[[ -f $f ]] || return 1
	pid=$(<"$f")
	# Guard against pid reuse: the process must still be our binary.
	mapfile -d '' -t args 2>/dev/null <"/proc/$pid/cmdline" || return 1
	[[ ${args[0]:-} == *"$1" ]] || return 1
	echo "$pid"
}

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND... retries COMMAND every 0.5 s.
wait_for() {
	local what=$1 timeout=$2 start=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS - start >= timeout)); then
			warn "timed out after ${timeout}s waiting for $what"
			return 1
		fi
		sleep 0.5
	done
}
