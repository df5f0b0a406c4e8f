#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# up.sh — bring up the e2e Kubernetes cluster on this machine, or check the
# one that is running. `make e2e-cluster` runs it.
#
# E2E_CLUSTER=processes (the default): etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kube-proxy run as plain processes next to a private containerd; pods get a
# Linux bridge (mirrord-e2e0) with host-local IPAM; CoreDNS runs as a
# Deployment. It is idempotent: run it again and it only checks the cluster,
# re-imports images whose content changed and re-applies the fixtures.
#
# E2E_CLUSTER=kind: a kind cluster "mirrord-e2e" with one control-plane and
# one worker node, from a node image built here offline (see kind.sh), the
# same fixture (py-serv with one replica on each node), CoreDNS, and a small
# CNI of our own. Idempotent in the same way.
#
# Ctrl-C (or SIGTERM) while it runs tears the cluster down.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"
source "$HERE/build.sh"
source "$HERE/config.sh"
source "$HERE/kind.sh"

main() {
	local start
	start=$(now_s)
	require_root
	# Ctrl-C anywhere in here leaves no half-made cluster behind.
	trap on_interrupt INT TERM
	if [[ $E2E_CLUSTER == kind ]]; then
		main_kind "$start"
		return
	fi
	preflight
	build_all

	if cluster_running && [[ $(cat "$E2E_STATE/netplan" 2>/dev/null) != "$(netplan)" ]]; then
		# Started by an older harness or with another E2E_IPV6: the pods'
		# addresses and the Service ranges are fixed at start.
		warn "the running cluster has another network plan ($(cat "$E2E_STATE/netplan" 2>/dev/null || echo unknown)); restarting it"
		"$HERE/down.sh"
	fi
	if cluster_running; then
		section "Cluster already running"
		import_images
	else
		# A half-running cluster, or the state of one that crashed (its etcd
		# data would meet new certificates): clear it away first.
		if any_component_running || [[ -d $E2E_RUN || -d $E2E_STATE/etcd ]]; then
			warn "found (part of) an earlier cluster; tearing it down to start clean"
			"$HERE/down.sh"
		fi
		start_cluster
	fi
	deploy_addons
	trap - INT TERM

	section "Cluster ready in $(elapsed "$start")"
	cat >&2 <<MSG
    kubeconfig: $KUBECONFIG_OUT
    kubectl:    $KUBECTL
    use it:     export KUBECONFIG=$KUBECONFIG_OUT PATH=$K8S_BIN:\$PATH
    logs:       $LOGS/
    tear down:  make e2e-down
MSG
	echo "$KUBECONFIG_OUT"
}

main_kind() {
	local start=$1
	# Any failure, and a Ctrl-C that kills a step (set -e then ends the
	# script before the INT trap could run), tears down what this run made.
	trap 'kind_failed $?' EXIT
	build_all
	kind_up
	DNS_SVC_IP=$KIND_DNS_SVC_IP
	deploy_addons
	check_spread
	trap - EXIT INT TERM

	section "kind cluster ready in $(elapsed "$start")"
	cat >&2 <<MSG
    kubeconfig: $KUBECONFIG_OUT
    kubectl:    $KUBECTL
    nodes:      ${KIND_NODES[*]}
    use it:     export KUBECONFIG=$KUBECONFIG_OUT PATH=$K8S_BIN:\$PATH
    docker:     DOCKER_HOST=unix://$KIND_DOCKER_SOCK docker ps
    logs:       $KIND_STATE/logs/
    tear down:  E2E_CLUSTER=kind make e2e-down
MSG
	echo "$KUBECONFIG_OUT"
}

# shellcheck disable=SC2317 # (called by the trap)
kind_failed() {
	local status=$1
	((status != 0)) || return 0
	trap - EXIT INT TERM
	warn "E2E_CLUSTER=kind up failed (exit status $status): tearing down what it made"
	"$HERE/down.sh" || true
	exit "$status"
}

# check_spread makes sure py-serv has a replica on each kind node: the
# two-node tests target the one on the worker.
check_spread() {
	local nodes
	nodes=$(kctl get pods -l app=py-serv -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort -u | tr '\n' ' ')
	[[ $nodes == "${KIND_NODES[*]} " ]] || die "py-serv's replicas are on [$nodes], want one on each of ${KIND_NODES[*]}"
}

# shellcheck disable=SC2317 # (called by the trap)
on_interrupt() {
	trap - INT TERM EXIT
	warn "interrupted: tearing the cluster down"
	"$HERE/down.sh" || true
	exit 130
}

preflight() {
	local ip
	ip=$(node_ip)
	[[ -n $ip ]] || die "no global IPv4 address on this machine for the node to register with"
	[[ -d /sys/fs/cgroup ]] || die "/sys/fs/cgroup is missing"
	# Fail early and clearly if something else holds a port the cluster needs.
	if ! any_component_running; then
		local port holders
		for port in 2379 2380 "$APISERVER_PORT" 10248 10249 10250 10256 10257 10259; do
			holders=$(ss -Hltnp "sport = :$port" 2>/dev/null || true)
			[[ -z $holders ]] || die "port $port is already in use: $holders"
		done
	fi
}

any_component_running() {
	local c
	for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null && return 0; done
	return 1
}

# netplan is what the cluster's addresses are fixed by at start.
netplan() { echo "pods $(cluster_cidrs) services $(service_cidrs)"; }

cluster_running() {
	local c
	for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || return 1; done
	[[ -f $KUBECONFIG_OUT ]] && kctl get --raw /readyz >/dev/null 2>&1 && node_ready
}

node_ready() {
	[[ $(kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

# start NAME COMMAND... runs a component in its own session (so a Ctrl-C in
# the terminal reaches this script, which tears down in order, rather than
# every component at once) with its output in $LOGS/NAME.log.
start() {
	local name=$1
	shift
	mkdir -p "$LOGS" "$E2E_RUN/pids"
	log "starting $name"
	echo "=== $(date -Is) $*" >>"$LOGS/$name.log"
	# Only stdin, stdout and stderr go to the component: it must not keep
	# a descriptor of whoever started the cluster, such as the lock of
	# `flock LOCK make e2e` (flock without -o), which the component would
	# then hold for as long as it runs, blocking every later run.
	(
		for fd in /proc/$BASHPID/fd/*; do
			fd=${fd##*/}
			((fd > 2)) && eval "exec $fd>&-" 2>/dev/null || true
		done
		exec setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1
	) &
	echo $! >"$E2E_RUN/pids/$name.pid"
}

start_cluster() {
	local ip ip6 node_ips t cfg=$E2E_STATE/config
	ip=$(node_ip)
	node_ips=$ip
	if dual_stack; then
		ip6=$(node_ip6)
		node_ips+=${ip6:+,$ip6}
	fi
	section "Starting the processes cluster (node $NODE_NAME, $node_ips$(dual_stack && echo ', dual-stack'))"
	t=$(now_s)
	mkdir -p "$E2E_STATE" "$E2E_RUN"
	save_sysctls
	# Pod-to-service-to-pod traffic on one bridge must pass through iptables.
	[[ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || sysctl -qw net.bridge.bridge-nf-call-iptables=1
	if dual_stack; then
		# The same for IPv6, which is also forwarded from a pod to the
		# Service's endpoint (the kubelet sets the IPv4 switch itself).
		[[ ! -e /proc/sys/net/bridge/bridge-nf-call-ip6tables ]] || sysctl -qw net.bridge.bridge-nf-call-ip6tables=1
		sysctl -qw net.ipv6.conf.all.forwarding=1
	fi
	generate_pki "$ip"
	write_configs "$ip"
	netplan >"$E2E_STATE/netplan"
	log "configuration written in $(elapsed "$t")"

	start etcd "$ETCD_BIN/etcd" --name "$NODE_NAME" --data-dir "$E2E_STATE/etcd" \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster "$NODE_NAME=http://127.0.0.1:2380" \
		--unsafe-no-fsync --log-level warn
	# containerd starts in parallel with the API server: they do not depend
	# on each other, and the images must be in place before the kubelet runs.
	# No image is ever pulled (all are imported). The proxy settings send any
	# attempt to a closed port on loopback, so a pod naming a missing image
	# fails at once with ErrImagePull, without a DNS query or connection
	# leaving the machine.
	start containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
		containerd --config "$cfg/containerd.toml"
	wait_for etcd 30 curl -sf http://127.0.0.1:2379/health || fail_start etcd

	# The API server binds all addresses: pods reach it through the
	# kubernetes Service, whose endpoint is the node IP. Clients here use
	# 127.0.0.1.
	start kube-apiserver "$K8S_BIN/kube-apiserver" \
		--etcd-servers=http://127.0.0.1:2379 \
		--bind-address=0.0.0.0 --secure-port="$APISERVER_PORT" --advertise-address="$ip" \
		--service-cluster-ip-range="$(service_cidrs)" \
		--client-ca-file="$PKI/ca.crt" \
		--tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
		--kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
		--kubelet-certificate-authority="$PKI/ca.crt" \
		--kubelet-preferred-address-types=InternalIP \
		--service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
		--service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
		--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
		--allow-privileged=true --profiling=false --v=1

	wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version || fail_start containerd
	import_images
	wait_for kube-apiserver 90 kctl get --raw /readyz || fail_start kube-apiserver
	log "API server ready after $(elapsed "$t")"

	start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
		--kubeconfig="$cfg/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$cfg/controller-manager.kubeconfig" \
		--authorization-kubeconfig="$cfg/controller-manager.kubeconfig" \
		--bind-address=127.0.0.1 --leader-elect=false --cluster-name="$NODE_NAME" \
		--service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
		--cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
		--use-service-account-credentials=true --service-cluster-ip-range="$(service_cidrs)" \
		--profiling=false --v=1
	start kube-scheduler "$K8S_BIN/kube-scheduler" \
		--kubeconfig="$cfg/scheduler.kubeconfig" \
		--authentication-kubeconfig="$cfg/scheduler.kubeconfig" \
		--authorization-kubeconfig="$cfg/scheduler.kubeconfig" \
		--bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1
	start kubelet "$K8S_BIN/kubelet" --config="$cfg/kubelet.yaml" \
		--kubeconfig="$cfg/kubelet.kubeconfig" --hostname-override="$NODE_NAME" --node-ip="$node_ips" \
		--root-dir="$E2E_STATE/kubelet" --v=1
	start kube-proxy "$K8S_BIN/kube-proxy" --config="$cfg/kube-proxy.yaml" --v=1

	wait_for "node $NODE_NAME to be Ready" 90 node_ready || fail_start kubelet
	log "node Ready after $(elapsed "$t")"
}

# fail_start NAME shows the end of a component's log and tears down.
fail_start() {
	warn "$1 did not come up; last lines of $LOGS/$1.log:"
	tail -n 30 "$LOGS/$1.log" >&2 || true
	trap - INT TERM
	"$HERE/down.sh" || true
	die "$1 did not come up"
}

# import_images loads every image tar into containerd's k8s.io namespace
# (where the CRI looks) unless containerd already has that exact image.
import_images() {
	local name ref id mark=$E2E_STATE/imported
	mkdir -p "$mark"
	local have
	have=$(ctr_k8s images ls -q)
	for name in "${IMAGE_NAMES[@]}"; do
		id=$(<"$IMAGES_DIR/$name.id")
		ref=$(tar -xOf "$IMAGES_DIR/$name.tar" manifest.json | sed -n 's/.*"RepoTags":\["\([^"]*\)".*/\1/p')
		if grep -qxF "$ref" <<<"$have" && [[ -f $mark/$name && $(<"$mark/$name") == "$id" ]]; then
			continue
		fi
		log "importing $ref"
		ctr_k8s images import "$IMAGES_DIR/$name.tar" >/dev/null
		echo "$id" >"$mark/$name"
	done
}

# render FILE replaces the @NAME@ placeholders of a manifest.
render() {
	sed -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g" -e "s|@DNS_SVC_IP@|$DNS_SVC_IP|g" \
		-e "s|@CLUSTER_DOMAIN@|$CLUSTER_DOMAIN|g" \
		-e "s|@TESTAPP_IMAGE@|$TESTAPP_IMAGE|g" -e "s|@TESTAPP_IMAGE_ID@|$(<"$IMAGES_DIR/testapp.id")|g" \
		-e "s|@COREDNS_IMAGE_ID@|$(<"$IMAGES_DIR/coredns.id")|g" \
		"$1"
}

deploy_addons() {
	local t
	t=$(now_s)
	section "Deploying CoreDNS and the test app"
	# The image ID in each pod template's annotations makes a changed image
	# roll the Deployment (the tags never change).
	{ render "$HERE/manifests/coredns.yaml"; echo ---; render "$HERE/manifests/testapp.yaml"; } |
		kctl apply -f - >/dev/null
	kctl -n kube-system rollout status deploy/coredns --timeout=120s >&2
	kctl rollout status deploy/backend --timeout=120s >&2
	kctl rollout status deploy/py-serv --timeout=120s >&2
	log "done in $(elapsed "$t")"
}

# (One line: bash reads a script as it runs it, so nothing may follow main.)
main "$@"; exit
