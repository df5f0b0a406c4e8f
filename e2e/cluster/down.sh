#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# down.sh — stop the e2e cluster and remove everything it put on this machine:
# processes, containers, network namespaces, mounts, the bridge and veths,
# iptables chains, cgroups and the kernel settings it changed. `make e2e-down`
# runs it. It also cleans up after a crashed or half-started cluster, and ends
# by checking that nothing is left (exit status 1 if something is).
#
# E2E_CLUSTER=kind: deletes the kind cluster, its containers, volumes and
# Docker network, stops the harness's dockerd and checks likewise (kind.sh).
#
# Kept on purpose: the build cache ($E2E_CACHE, with the image tars) and the
# component logs ($E2E_STATE/logs, for CI artifacts); E2E_PURGE=1 removes
# the logs too. containerd's root goes: the next start re-imports the images
# (a few seconds, while the API server starts).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/common.sh"
source "$HERE/kind.sh"

main() {
	require_root
	local start
	start=$(now_s)
	if [[ $E2E_CLUSTER == kind ]]; then
		section "Tearing down the kind cluster $KIND_CLUSTER"
		kind_teardown
		section "Checking that nothing is left"
		if kind_leftovers; then
			log "clean (teardown took $(elapsed "$start"))"
		else
			die "teardown left the things above behind"
		fi
		return
	fi
	section "Tearing down the e2e cluster"
	# Nothing must recreate pods while they are being removed.
	stop kube-controller-manager kube-scheduler kubelet kube-proxy
	kill_pod_processes
	stop containerd kube-apiserver etcd
	kill_strays
	unmount_all
	remove_links
	remove_iptables_chains
	remove_cgroups
	restore_sysctls
	remove_state
	section "Checking that nothing is left"
	if leftovers; then
		log "clean (teardown took $(elapsed "$start"))"
	else
		die "teardown left the things above behind"
	fi
}

# stop NAME... sends SIGTERM to components we started, waits up to 5 s for
# them to exit, then sends SIGKILL. (Their state is thrown away anyway; the
# grace period only lets containerd tidy up after its shims.)
stop() {
	local name pid pids=() i alive
	for name in "$@"; do
		if pid=$(pid_of "$name"); then
			log "stopping $name (pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
		rm -f "$E2E_RUN/pids/$name.pid"
	done
	for ((i = 0; i < 50; i++)); do
		alive=0
		for pid in "${pids[@]}"; do [[ -d /proc/$pid ]] && alive=1; done
		((alive)) || return 0
		sleep 0.1
	done
	kill -KILL "${pids[@]}" 2>/dev/null || true
}

# kubepods_cgroups lists the cgroup directories the kubelet created (cgroup
# v1: one tree per controller; v2: one tree).
kubepods_cgroups() {
	local d
	for d in /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods; do
		[[ -d $d ]] && echo "$d"
	done
	return 0
}

# kill_pod_processes kills whatever still runs in a pod cgroup: every
# container process lives there, whoever started it. (Each process is in every
# cgroup v1 tree, so one tree is enough.)
kill_pod_processes() {
	local d pids
	mapfile -t d < <(kubepods_cgroups)
	((${#d[@]})) || return 0
	mapfile -t pids < <(find "${d[0]}" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
	((${#pids[@]})) || return 0
	log "killing the pods' processes: ${pids[*]}"
	kill -KILL "${pids[@]}" 2>/dev/null || true
}

# our_stray_pids lists processes this harness started but lost track of (a
# deleted pid file, a crash): binaries from our cache, containerd with our
# config, shims serving our containerd socket. Bash builtins only: it looks
# at every process on the machine.
our_stray_pids() {
	local p args a
	for p in /proc/[0-9]*; do
		mapfile -d '' -t args 2>/dev/null <"$p/cmdline" || continue
		((${#args[@]})) || continue
		case ${args[0]} in
		"$TOOLS_BIN"/* | "$KUBECTL") continue ;; # imgbuild, a test's kubectl
		# The kind cluster's kind and runcwrap: another cluster's, which
		# kind.sh's own teardown handles.
		"$E2E_CACHE"/kind-*) continue ;;
		"$E2E_CACHE"/*) echo "${p#/proc/}" && continue ;;
		esac
		for a in "${args[@]}"; do
			if [[ $a == "$CONTAINERD_SOCK" || $a == "$E2E_STATE/config/containerd.toml" ]]; then
				echo "${p#/proc/}"
				break
			fi
		done
	done
}

kill_strays() {
	local pids
	mapfile -t pids < <(our_stray_pids)
	((${#pids[@]})) || return 0
	log "killing processes left by the cluster: ${pids[*]}"
	kill -TERM "${pids[@]}" 2>/dev/null || true
	local i
	for ((i = 0; i < 20; i++)); do
		sleep 0.1
		mapfile -t pids < <(our_stray_pids)
		((${#pids[@]})) || return 0
	done
	kill -KILL "${pids[@]}" 2>/dev/null || true
}

# our_mounts lists mount points under the cluster's directories (pod
# volumes, container root file systems, network namespaces, the kubelet's
# own bind mount), deepest first.
our_mounts() {
	awk -v a="$E2E_STATE" -v b="$E2E_RUN" \
		'index($5, a "/") == 1 || $5 == a || index($5, b "/") == 1 || $5 == b { print length($5), $5 }' \
		/proc/self/mountinfo | sort -rn | cut -d' ' -f2- | sed 's/\\040/ /g'
}

unmount_all() {
	local m n=0
	while IFS= read -r m; do
		[[ -n $m ]] || continue
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || warn "cannot unmount $m"
		n=$((n + 1))
	done < <(our_mounts)
	((n == 0)) || log "unmounted $n mounts"
}

# remove_links deletes the pod bridge and any veth still attached to it.
# (A veth normally disappears with its pod's network namespace.)
remove_links() {
	local veth
	ip link show "$BRIDGE" >/dev/null 2>&1 || return 0
	for veth in $(ip -o link show master "$BRIDGE" | awk -F': ' '{ sub("@.*", "", $2); print $2 }'); do
		ip link delete "$veth" 2>/dev/null || true
	done
	ip link delete "$BRIDGE"
	log "removed bridge $BRIDGE"
}

# iptables_variants lists the iptables front ends on this machine: the
# kubelet and kube-proxy program whichever `iptables` is (nft or legacy);
# both are checked so that a switch of alternatives leaves nothing behind.
iptables_variants() {
	local v
	for v in iptables-nft ip6tables-nft iptables-legacy ip6tables-legacy; do
		command -v "$v-save" >/dev/null && echo "$v"
	done
	return 0
}

# remove_iptables_chains removes every KUBE-* chain and every rule that jumps
# to one, table by table (save, filter, restore: one atomic step per table).
# Only Kubernetes names its chains KUBE-, and this is the only Kubernetes
# whose rules live in this machine's own network namespace.
remove_iptables_chains() {
	local v t saved
	for v in $(iptables_variants); do
		for t in filter nat mangle raw; do
			saved=$("$v-save" -t "$t" 2>/dev/null) || continue
			grep -q 'KUBE-' <<<"$saved" || continue
			log "removing KUBE-* chains from $v table $t"
			awk '!/^:KUBE-/ && !/^-A KUBE-/ && !/ -[jg] KUBE-/' <<<"$saved" | "$v-restore" -T "$t"
		done
	done
}

# remove_cgroups removes the (now empty) kubepods cgroup trees, deepest first.
remove_cgroups() {
	local d
	for d in $(kubepods_cgroups); do
		find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}

restore_sysctls() {
	local f=$E2E_STATE/sysctl.saved line
	[[ -f $f ]] || return 0
	while IFS= read -r line; do
		[[ -n ${line#*=} ]] || continue
		sysctl -qw "$line" 2>/dev/null || warn "cannot restore $line"
	done <"$f"
	rm -f "$f"
}

# remove_state deletes the cluster's data. It refuses while anything is still
# mounted below it: rm -rf through a leftover bind mount of a pod's hostPath
# volume would delete files on the host.
remove_state() {
	if [[ -n $(our_mounts) ]]; then
		warn "mounts remain under $E2E_STATE or $E2E_RUN; not deleting them"
		return 0
	fi
	local keep=(logs)
	[[ ${E2E_PURGE:-0} == 1 ]] && keep=()
	if [[ -d $E2E_STATE ]]; then
		local entry base k skip
		for entry in "$E2E_STATE"/* "$E2E_STATE"/.[!.]*; do
			[[ -e $entry ]] || continue
			base=${entry##*/}
			skip=0
			for k in "${keep[@]}"; do [[ $base == "$k" ]] && skip=1; done
			((skip)) || rm -rf "$entry"
		done
	fi
	rm -rf "$E2E_RUN"
	# The kubelet writes a few things to fixed paths whatever its root dir:
	# the per-container log symlinks and its device-plugin socket.
	local link
	for link in /var/log/containers/*.log; do
		[[ -L $link && $(readlink "$link") == "$E2E_STATE"/* ]] && rm -f "$link"
	done
	rm -f /var/lib/kubelet/device-plugins/kubelet.sock
	rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet /var/log/containers 2>/dev/null || true
}

# leftovers prints what the cluster left behind; true if nothing.
leftovers() {
	local bad=0 v t out
	out=$(our_stray_pids | tr '\n' ' ')
	[[ -z $out ]] || { warn "processes: $out"; bad=1; }
	for c in "${COMPONENTS[@]}"; do
		pid_of "$c" >/dev/null && { warn "process: $c"; bad=1; }
	done
	out=$(our_mounts)
	[[ -z $out ]] || { warn "mounts: $out"; bad=1; }
	if ip link show "$BRIDGE" >/dev/null 2>&1; then warn "interface $BRIDGE"; bad=1; fi
	for v in $(iptables_variants); do
		for t in filter nat mangle raw; do
			out=$("$v-save" -t "$t" 2>/dev/null | grep -c 'KUBE-' || true)
			((out == 0)) || { warn "$v table $t: $out KUBE-* lines"; bad=1; }
		done
	done
	out=$(kubepods_cgroups)
	[[ -z $out ]] || { warn "cgroups: $out"; bad=1; }
	((bad == 0))
}

# (One line: bash reads a script as it runs it, so nothing may follow main.)
main "$@"; exit
