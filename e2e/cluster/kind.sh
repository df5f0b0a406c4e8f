# shellcheck shell=bash
# The kind cluster (E2E_CLUSTER=kind): one control-plane and one worker node,
# each a privileged container of a dockerd of our own, from a node image
# assembled here without any registry. Sourced by up.sh and down.sh after
# common.sh and build.sh.
#
# Why by hand: `kind build node-image` pulls a base image and every component
# image from registries, and kind's default CNI (kindnetd) is an image too.
# Here the node image is a Debian bookworm root made by mmdebstrap (bookworm,
# not trixie: trixie's systemd refuses cgroup v1, which CI machines use),
# plus kind's own base files (entrypoint, units, containerd config) taken
# from the kind module at build time, the Kubernetes binaries build.sh builds,
# the component images kubeadm expects (preloaded into the node's containerd)
# and our CNI (manifests/kind-cni.yaml).
#
# Nothing here touches the processes cluster: other pod/service ranges,
# another containerd (inside the nodes), another bridge, and a dockerd with
# its own socket, data root and exec root.

KIND_VERSION=v0.30.0 # v0.32+ has a trixie base (systemd ≥ 256, no cgroup v1)
KIND_CLUSTER=mirrord-e2e
KIND_NODES=("$KIND_CLUSTER-control-plane" "$KIND_CLUSTER-worker")
KIND_BIN=$E2E_CACHE/kind-$KIND_VERSION/bin/kind
# runcwrap for kind's dockerd and inside the nodes: a copy of its own, built
# from this tree, because $TOOLS_BIN is shared with every checkout that runs
# the processes cluster on this machine, and an older runcwrap there (one
# that leaves CAP_SYS_RESOURCE in) makes every `docker exec` into a node fail
# with "unable to apply caps". Debian's runc is /usr/sbin/runc on the host and
# in the node image alike.
KIND_RUNCWRAP=$E2E_CACHE/kind-$KIND_VERSION/runcwrap/runcwrap
KIND_NODE_DIR=$E2E_CACHE/kind-node-$K8S_VERSION # node image tar, keyed by content
KIND_NODE_REPO=mirrord-e2e/kind-node
KIND_CNI_IMAGE=ghcr.io/mirrord-go/e2e-kind-cni:e2e
KIND_STATE=/var/lib/mirrord-e2e-kind # config, logs, import marks
KIND_RUN=/run/mirrord-e2e-kind
KIND_DOCKER_SOCK=$KIND_RUN/docker.sock
# Named a cache: it only holds images (the node image, ≈1.6 GB), which make the
# next start fast. Containers, volumes and networks go with `make e2e-down`.
KIND_DOCKER_DATA=/var/cache/mirrord-e2e-kind-docker
KIND_NETWORK=mirrord-e2e-kind
KIND_BRIDGE=mirrord-kind0
KIND_NODE_SUBNET=10.246.0.0/24 # the nodes' Docker network
KIND_POD_CIDR=10.245.0.0/16
KIND_SERVICE_CIDR=10.97.0.0/16
KIND_DNS_SVC_IP=10.97.0.10 # kubeadm gives the kubelet the service range's 10th address
# Debian packages of the node root (kind's base Dockerfile's list, less NFS and
# iSCSI, plus containerd, runc and the CNI plugins, which kind builds itself).
KIND_NODE_PACKAGES=systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,fuse-overlayfs,bash,ca-certificates,curl,jq,procps,containerd,runc,containernetworking-plugins
# kube-proxy runs in nftables mode (one backend, no iptables-legacy/nft guess
# between the node and the image); its image needs nft and conntrack.
KIND_PROXY_PACKAGES=nftables,conntrack,iptables
# Where mmdebstrap gets the packages: this machine's own apt sources (deb822
# file; the chroot gets them as they are), or E2E_DEBIAN_SOURCES; without
# either, mmdebstrap's default mirror.
DEBIAN_SOURCES=${E2E_DEBIAN_SOURCES:-/etc/apt/sources.list.d/debian.sources}

kdocker() { DOCKER_HOST=unix://$KIND_DOCKER_SOCK docker "$@"; }

# KIND_CANNOT_RUN is up.sh's exit status when dockerd cannot start here
# (no kernel support for its containers, a sandbox that forbids them).
KIND_CANNOT_RUN=3

# interruptible COMMAND... runs a long step in the background and waits for
# it: bash runs an INT/TERM trap (up.sh's teardown) only after a foreground
# command ends, and not at all when the command handles the signal itself and
# exits 0, as `kind create` does (checked: a Ctrl-C during it was lost and the
# cluster came up anyway). `wait` returns at once on a trapped signal.
interruptible() {
	"$@" &
	wait $!
}
kind_cmd() {
	DOCKER_HOST=unix://$KIND_DOCKER_SOCK KIND_EXPERIMENTAL_PROVIDER=docker \
		KIND_EXPERIMENTAL_DOCKER_NETWORK=$KIND_NETWORK "$KIND_BIN" "$@"
}

kind_packages() {
	local missing=() p
	for p in docker.io mmdebstrap jq; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	section "Installing Debian packages for kind: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
		{ apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
	# docker.io enables its own dockerd; the harness runs a separate one with
	# its own socket, so a distro dockerd (if systemd starts one) is no matter.
}

build_kind() {
	local dir=${KIND_RUNCWRAP%/*}
	[[ -x /usr/sbin/runc ]] || die "/usr/sbin/runc is missing (Debian's runc package), which runcwrap execs"
	# Every time (Go's build cache makes it a no-op); renamed into place, as
	# the running dockerd may exec it at any moment.
	mkdir -p "$dir"
	(cd "$E2E_ROOT/tools" && GOWORK=off CGO_ENABLED=0 go build -trimpath \
		-ldflags "-X main.realRunc=/usr/sbin/runc" -o "$dir/runcwrap.tmp" ./runcwrap)
	mv "$dir/runcwrap.tmp" "$KIND_RUNCWRAP"
	[[ -x $KIND_BIN ]] && return 0
	section "Building kind $KIND_VERSION from the Go module proxy"
	rm -rf "${KIND_BIN%/*}.tmp"
	GOBIN=${KIND_BIN%/*}.tmp GOWORK=off CGO_ENABLED=0 go install "sigs.k8s.io/kind@$KIND_VERSION"
	mv "${KIND_BIN%/*}.tmp" "${KIND_BIN%/*}"
}

# kind_base_files prints the directory of kind's node base files (entrypoint,
# systemd units, containerd config) in the module cache, downloading the
# module if needed.
kind_base_files() {
	local dir
	dir=$(cd "$E2E_ROOT/tools" && GOWORK=off go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | jq -r .Dir) ||
		die "cannot download sigs.k8s.io/kind@$KIND_VERSION from the Go module proxy"
	[[ -f $dir/images/base/files/usr/local/bin/entrypoint ]] || die "$dir has no images/base/files: not the kind module layout this harness knows"
	echo "$dir/images/base/files"
}

dockerd_running() { [[ -S $KIND_DOCKER_SOCK ]] && kdocker version >/dev/null 2>&1; }

# start_dockerd starts our dockerd unless it runs. Its options, and why:
#   --iptables=false --ip-masq=false --ip-forward=false: dockerd would
#     otherwise set the FORWARD policy to DROP, which cuts off the processes
#     cluster's pods, and add NAT rules nobody needs (the nodes talk to each
#     other over one bridge, and to nothing outside; the API server port
#     Docker publishes on 127.0.0.1 is served by docker-proxy, no rule
#     needed).
#   --bridge=none: no docker0; the nodes' network is ours (KIND_NETWORK).
#   runcwrap as the default runtime: kind's nodes are --privileged, and runc
#     cannot grant CAP_SYS_RESOURCE where the host lacks it (see runcwrap).
start_dockerd() {
	dockerd_running && return 0
	[[ -x $KIND_RUNCWRAP ]] || die "$KIND_RUNCWRAP is missing (build_kind builds it)"
	section "Starting dockerd for kind ($KIND_DOCKER_SOCK)"
	local forward_before
	forward_before=$(iptables -S FORWARD 2>/dev/null | head -1)
	mkdir -p "$KIND_RUN" "$KIND_DOCKER_DATA" "$KIND_STATE/logs"
	# An empty config file: a machine's /etc/docker/daemon.json is for its own dockerd.
	echo '{}' >"$KIND_RUN/daemon.json"
	(
		for fd in /proc/$BASHPID/fd/*; do
			fd=${fd##*/}
			((fd > 2)) && eval "exec $fd>&-" 2>/dev/null || true
		done
		exec setsid dockerd --config-file "$KIND_RUN/daemon.json" \
			--host "unix://$KIND_DOCKER_SOCK" --data-root "$KIND_DOCKER_DATA" \
			--exec-root "$KIND_RUN/exec" --pidfile "$KIND_RUN/dockerd.pid" \
			--iptables=false --ip-masq=false --ip-forward=false --bridge=none \
			--storage-driver=overlay2 --log-level=warn \
			--add-runtime "runcwrap=$KIND_RUNCWRAP" --default-runtime=runcwrap \
			</dev/null >>"$KIND_STATE/logs/dockerd.log" 2>&1
	) &
	if ! wait_for "dockerd on $KIND_DOCKER_SOCK" 60 kdocker version; then
		tail -n 20 "$KIND_STATE/logs/dockerd.log" >&2
		# A status of its own: make test then runs without kind
		# (scripts/e2e-test.sh) instead of failing.
		die_status "$KIND_CANNOT_RUN" "dockerd did not start: this machine cannot run the kind cluster; its log is $KIND_STATE/logs/dockerd.log"
	fi
	[[ $(iptables -S FORWARD 2>/dev/null | head -1) == "$forward_before" ]] ||
		warn "the FORWARD policy changed while dockerd started: $(iptables -S FORWARD | head -1)"
}

dockerd_pid() {
	local pid args
	[[ -f $KIND_RUN/dockerd.pid ]] || return 1
	pid=$(<"$KIND_RUN/dockerd.pid")
	mapfile -d '' -t args 2>/dev/null <"/proc/$pid/cmdline" || return 1
	[[ ${args[0]:-} == *dockerd ]] || return 1
	echo "$pid"
}

# kind_component_images writes the images kubeadm's static pods and
# DaemonSets name (exactly the tags `kubeadm config images list` prints) plus
# the CNI image to $1, as docker-archive tars.
kind_component_images() {
	local out=$1 c bin path=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin want
	mkdir -p "$out"
	want=$("$K8S_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION")
	# kubeadm's static pods call the binaries by bare name: PATH must be set.
	for c in kube-apiserver kube-controller-manager kube-scheduler; do
		"$TOOLS_BIN/imgbuild" -o "$out/$c.tar" -ref "registry.k8s.io/$c:$K8S_VERSION" \
			-file "$K8S_BIN/$c=/usr/local/bin/$c" -env "PATH=$path" >/dev/null
	done
	bin=$(grep '/etcd:' <<<"$want") || die "kubeadm lists no etcd image"
	[[ ${bin#*:} == "${ETCD_VERSION#v}"-* ]] || die "kubeadm $K8S_VERSION wants $bin, the harness builds etcd $ETCD_VERSION: update ETCD_VERSION"
	"$TOOLS_BIN/imgbuild" -o "$out/etcd.tar" -ref "$bin" \
		-file "$ETCD_BIN/etcd=/usr/local/bin/etcd" -dir /var/lib/etcd:0700 -dir /tmp:1777 -env "PATH=$path" >/dev/null
	grep -qxF "$COREDNS_IMAGE" <<<"$want" || die "kubeadm $K8S_VERSION wants $(grep coredns <<<"$want"), the harness builds $COREDNS_IMAGE"
	grep -qxF "$PAUSE_IMAGE" <<<"$want" || die "kubeadm $K8S_VERSION wants $(grep pause <<<"$want"), the harness builds $PAUSE_IMAGE"
	cp "$IMAGES_DIR/coredns.tar" "$IMAGES_DIR/pause.tar" "$out/"
	# kube-proxy: a minimal Debian root for nft and conntrack.
	debian_root "$KIND_PROXY_PACKAGES" >"$out/proxy-root.tar.name"
	cp "$(<"$out/proxy-root.tar.name")" "$out/proxy-root.tar"
	mkdir -p "$out/proxy-add/usr/local/bin"
	cp "$K8S_BIN/kube-proxy" "$out/proxy-add/usr/local/bin/"
	tar -C "$out/proxy-add" --numeric-owner -rf "$out/proxy-root.tar" ./usr/local/bin/kube-proxy
	kdocker import --change "ENV PATH=$path" "$out/proxy-root.tar" "registry.k8s.io/kube-proxy:$K8S_VERSION" >/dev/null
	kdocker save -o "$out/kube-proxy.tar" "registry.k8s.io/kube-proxy:$K8S_VERSION"
	kdocker rmi "registry.k8s.io/kube-proxy:$K8S_VERSION" >/dev/null
	rm -rf "$out/proxy-root.tar" "$out/proxy-root.tar.name" "$out/proxy-add"
	# The CNI DaemonSet's image: busybox (sh, ip) and kubectl.
	"$TOOLS_BIN/imgbuild" -o "$out/kind-cni.tar" -ref "$KIND_CNI_IMAGE" \
		-file /bin/busybox=/bin/busybox -file "$KUBECTL=/usr/local/bin/kubectl" \
		-symlink /bin/sh=busybox -symlink /bin/ip=busybox -symlink /bin/cat=busybox \
		-symlink /bin/mv=busybox -symlink /bin/sleep=busybox -symlink /bin/grep=busybox \
		-symlink /bin/printf=busybox -symlink /bin/echo=busybox -dir /tmp:1777 \
		-env "PATH=$path" >/dev/null
}

# debian_root PACKAGES prints the path of a cached tar of a Debian bookworm
# minbase root with PACKAGES (comma-separated), made by mmdebstrap if missing
# (2–4 minutes). Keyed by the package list; the packages' versions are what
# the mirror serves on the day it is made.
debian_root() {
	local pkgs=$1 key tar
	key=$(printf '%s' "$pkgs" | sha256sum | cut -c1-12)
	tar=$KIND_NODE_DIR/debian-bookworm-$key.tar
	if [[ ! -f $tar ]]; then
		log "Debian bookworm root with $pkgs (mmdebstrap)"
		mkdir -p "$KIND_NODE_DIR"
		local sources=()
		[[ -f $DEBIAN_SOURCES ]] && sources=("$DEBIAN_SOURCES")
		interruptible nice -n 19 ionice -c3 mmdebstrap --quiet --format=tar --variant=minbase --include="$pkgs" \
			bookworm "$tar.tmp" "${sources[@]}" >&2 || { rm -f "$tar.tmp"; die "mmdebstrap (bookworm, $pkgs) failed"; }
		mv "$tar.tmp" "$tar"
	fi
	echo "$tar"
}

# kind_node_key is the node image's cache key: the content of everything
# that goes into it, and the functions that assemble it.
kind_node_key() {
	{
		sha256sum "$K8S_BIN"/{kubeadm,kubelet,kubectl,kube-apiserver,kube-controller-manager,kube-scheduler,kube-proxy} \
			"$ETCD_BIN/etcd" "$IMAGES_DIR/coredns.tar" "$IMAGES_DIR/pause.tar" "$KIND_RUNCWRAP" \
			"$HERE/manifests/kind-cni.yaml" /bin/busybox | awk '{print $1}'
		echo "$KIND_VERSION $KIND_NODE_PACKAGES $KIND_PROXY_PACKAGES $KIND_CNI_IMAGE"
		# The recipe itself (not the whole file: a change to teardown must not
		# rebuild the image).
		declare -f kind_component_images build_node_image preload_node_images
	} | sha256sum | cut -c1-12
}

# ensure_node_image makes $KIND_NODE_IMAGE present in our dockerd: already
# there, loaded from the cached tar, or built.
ensure_node_image() {
	local key
	key=$(kind_node_key)
	KIND_NODE_IMAGE=$KIND_NODE_REPO:$K8S_VERSION-$key
	if ! kdocker image inspect "$KIND_NODE_IMAGE" >/dev/null 2>&1; then
		if [[ -f $KIND_NODE_DIR/node-$key.tar ]]; then
			section "Loading the kind node image from $KIND_NODE_DIR/node-$key.tar"
			kdocker load -i "$KIND_NODE_DIR/node-$key.tar" >/dev/null
		else
			build_node_image "$key"
		fi
	fi
	# Older node images (≈1.6 GB each) are of no further use.
	local old
	old=$(kdocker images --format '{{.Repository}}:{{.Tag}}' "$KIND_NODE_REPO" | grep -vxF "$KIND_NODE_IMAGE" || true)
	if [[ -n $old ]]; then
		# shellcheck disable=SC2086 # one image per word
		kdocker rmi $old >/dev/null || warn "could not remove older node images: $old"
	fi
}

build_node_image() {
	local key=$1 start files work root
	section "Building the kind node image $KIND_NODE_IMAGE (Debian bookworm + Kubernetes $K8S_VERSION) — a few minutes"
	start=$(now_s)
	files=$(kind_base_files)
	work=$KIND_NODE_DIR/build
	root=$work/root
	rm -rf "$work"
	mkdir -p "$work"
	kind_component_images "$work/images"

	local base
	base=$(debian_root "$KIND_NODE_PACKAGES")
	mkdir -p "$root"
	tar -C "$root" --numeric-owner -xf "$base"

	log "kind's base files, Kubernetes binaries, runcwrap"
	install -m 0755 "$files"/usr/local/bin/* "$root/usr/local/bin/"
	mkdir -p "$root/kind/bin" "$root/kind/manifests" "$root/etc/kubernetes/manifests" "$root/opt/cni"
	install -m 0755 "$files"/kind/bin/* "$root/kind/bin/"
	install -m 0644 "$files/etc/crictl.yaml" "$root/etc/"
	install -m 0644 "$files/etc/containerd/config.toml" "$root/etc/containerd/"
	install -m 0644 "$files/etc/default/kubelet" "$root/etc/default/"
	install -m 0644 "$files"/etc/sysctl.d/* "$root/etc/sysctl.d/"
	mkdir -p "$root/etc/systemd/system/kubelet.service.d"
	install -m 0644 "$files"/etc/systemd/system/{kubelet.service,kubelet.slice,undo-mount-hacks.service} "$root/etc/systemd/system/"
	install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* "$root/etc/systemd/system/kubelet.service.d/"
	install -m 0755 "$K8S_BIN"/{kubeadm,kubelet,kubectl} "$root/usr/bin/"
	install -m 0755 "$KIND_RUNCWRAP" "$root/usr/local/bin/runcwrap"
	echo "$K8S_VERSION" >"$root/kind/version"
	sed "s|@KIND_CNI_IMAGE@|$KIND_CNI_IMAGE|g" "$HERE/manifests/kind-cni.yaml" >"$root/kind/manifests/default-cni.yaml"
	# Debian puts the CNI plugins in /usr/lib/cni; kind's containerd looks in /opt/cni/bin.
	ln -s /usr/lib/cni "$root/opt/cni/bin"

	# containerd in the node: Debian's binary (kind's unit runs
	# /usr/local/bin/containerd, built by kind), runcwrap as the runtime, and no
	# oom_score_adj below its own (both for the missing CAP_SYS_RESOURCE).
	# The unit is ours rather than kind's: kind's sets OOMScoreAdjust=-999 and
	# raises rlimits to infinity, which systemd cannot do without the
	# capability, and the unit would never start.
	sed -i -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' \
		-e '/runtimes\.runc\.options\]/a\    BinaryName = "/usr/local/bin/runcwrap"' \
		"$root/etc/containerd/config.toml"
	grep -q 'BinaryName = "/usr/local/bin/runcwrap"' "$root/etc/containerd/config.toml" ||
		die "kind $KIND_VERSION's containerd config has no runc options table to add runcwrap to"
	cat >"$root/etc/systemd/system/containerd.service" <<'UNIT'
[Unit]
Description=containerd container runtime (mirrord e2e kind node)
After=network.target local-fs.target
StartLimitIntervalSec=0

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=1
TasksMax=infinity

[Install]
WantedBy=multi-user.target
UNIT
	# The base OCI spec kind's containerd config names: containerd's default,
	# plus kind's hook that mounts the fake product_uuid, without rlimits.
	ctr oci spec | jq '.hooks.createContainer += [{"path": "/kind/bin/mount-product-files.sh"}] | del(.process.rlimits)' \
		>"$root/etc/containerd/cri-base.json"

	# systemd: only what a node needs starts (kind's base image does the same).
	rm -f "$root/lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service" \
		"$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
		"$root"/lib/systemd/system/local-fs.target.wants/* "$root"/lib/systemd/system/sockets.target.wants/*udev* \
		"$root"/lib/systemd/system/sockets.target.wants/*initctl* "$root"/lib/systemd/system/basic.target.wants/*
	echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
	systemctl --root="$root" enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
	systemctl --root="$root" mask systemd-binfmt.service >/dev/null 2>&1
	[[ -L $root/etc/systemd/system/multi-user.target.wants/containerd.service ]] || die "could not enable containerd in the node root"

	preload_node_images "$root" "$work"

	log "importing into dockerd"
	tar -C "$root" --numeric-owner -cf - . |
		kdocker import --change 'ENV container=docker' \
			--change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' - "$KIND_NODE_IMAGE-base" >/dev/null
	# `docker import` takes no STOPSIGNAL; systemd stops cleanly on SIGRTMIN+3.
	printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$KIND_NODE_IMAGE-base" |
		DOCKER_BUILDKIT=0 kdocker build -q -t "$KIND_NODE_IMAGE" - >/dev/null 2>&1 ||
		die "docker build of $KIND_NODE_IMAGE failed"
	kdocker rmi "$KIND_NODE_IMAGE-base" >/dev/null
	rm -rf "$work"
	log "saving $KIND_NODE_DIR/node-$key.tar (the cache for a fresh dockerd)"
	rm -f "$KIND_NODE_DIR"/node-*.tar
	interruptible kdocker save -o "$KIND_NODE_DIR/node-$key.tar.tmp" "$KIND_NODE_IMAGE"
	mv "$KIND_NODE_DIR/node-$key.tar.tmp" "$KIND_NODE_DIR/node-$key.tar"
	log "node image built in $(elapsed "$start")"
}

# preload_node_images imports the component images into the node root's
# containerd store (namespace k8s.io, unpacked for overlayfs), with a
# throw-away containerd whose root is that directory. kubeadm's static pods
# then start without any pull. Debian's containerd is the same version on
# the host and in the node, so the store's format matches.
preload_node_images() {
	local root=$1 work=$2 sock pid tar ref want missing have
	sock=$work/preload/containerd.sock
	mkdir -p "$work/preload"
	cat >"$work/preload/config.toml" <<TOML
version = 2
root = "$root/var/lib/containerd"
state = "$work/preload/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/preload/opt"
TOML
	containerd --config "$work/preload/config.toml" >"$work/preload/containerd.log" 2>&1 &
	pid=$!
	wait_for "the preload containerd" 30 ctr --address "$sock" version ||
		{ kill "$pid"; cat "$work/preload/containerd.log" >&2; die "the preload containerd did not start"; }
	for tar in "$work"/images/*.tar; do
		ctr --address "$sock" -n k8s.io images import "$tar" >/dev/null ||
			{ kill "$pid"; die "importing $tar into the node image failed"; }
	done
	want=$("$K8S_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION"; echo "$KIND_CNI_IMAGE")
	missing=""
	# (The list in a variable: grep -q on a pipe would SIGPIPE ctr, and
	# pipefail would call that a miss.)
	have=$(ctr --address "$sock" -n k8s.io images ls -q)
	for ref in $want; do
		grep -qxF "$ref" <<<"$have" || missing+=" $ref"
	done
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	# The throw-away containerd's unpack mounts are gone with it; nothing of
	# it may stay mounted under the root that is about to be tarred.
	if grep -q " $root/" /proc/self/mountinfo; then die "mounts remain under $root after the preload"; fi
	[[ -z $missing ]] || die "the node image lacks images kubeadm needs:$missing"
	log "preloaded: $(tr '\n' ' ' <<<"$want")"
}

kind_cluster_exists() {
	local clusters
	clusters=$(kind_cmd get clusters 2>/dev/null) || return 1
	grep -qxF "$KIND_CLUSTER" <<<"$clusters"
}

kind_nodes_ready() {
	local n s
	for n in "${KIND_NODES[@]}"; do
		s=$(kctl get node "$n" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) || return 1
		[[ $s == True ]] || return 1
	done
}

ensure_kind_network() {
	kdocker network inspect "$KIND_NETWORK" >/dev/null 2>&1 && return 0
	local gw=${KIND_NODE_SUBNET%.*}.1 r
	# The subnet must be free on this machine, or the nodes would be unreachable.
	r=$(ip -4 route show to match "${KIND_NODE_SUBNET%/*}" | grep -v '^default' || true)
	[[ -z $r ]] || die "the kind node network $KIND_NODE_SUBNET overlaps a route on this machine: $r"
	kdocker network create --driver bridge --subnet "$KIND_NODE_SUBNET" --gateway "$gw" \
		-o "com.docker.network.bridge.name=$KIND_BRIDGE" \
		-o com.docker.network.bridge.enable_ip_masquerade=false \
		"$KIND_NETWORK" >/dev/null
}

write_kind_config() {
	mkdir -p "$KIND_STATE"
	# kubeadm's CoreDNS addon is skipped: the harness deploys its own
	# CoreDNS (manifests/coredns.yaml), like on the processes cluster, whose
	# Corefile has no upstream to forward to. The patch replaces kind's list,
	# so it repeats kind's own "preflight" (kind starts kubeadm as soon as
	# the node's entrypoint is done, before containerd is up, and the
	# preflight checks would also try to pull every image).
	cat >"$KIND_STATE/kind.yaml" <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  podSubnet: $KIND_POD_CIDR
  serviceSubnet: $KIND_SERVICE_CIDR
  kubeProxyMode: nftables
nodes:
  - role: control-plane
  - role: worker
kubeadmConfigPatches:
  - |
    kind: InitConfiguration
    skipPhases: [preflight, addon/coredns]
YAML
}

create_kind_cluster() {
	local t
	t=$(now_s)
	section "Creating kind cluster $KIND_CLUSTER (${KIND_NODES[*]})"
	write_kind_config
	ensure_kind_network
	mkdir -p "$(dirname "$KUBECONFIG_OUT")"
	# Backgrounded and waited for (see interruptible), with the redirection
	# on the job alone: on the function it would also catch the output of the
	# teardown a trap runs meanwhile.
	kind_cmd create cluster --name "$KIND_CLUSTER" --image "$KIND_NODE_IMAGE" \
		--config "$KIND_STATE/kind.yaml" --kubeconfig "$KUBECONFIG_OUT" --retain \
		--wait 0s >"$KIND_STATE/logs/kind-create.log" 2>&1 &
	if ! wait $!; then
		tail -n 30 "$KIND_STATE/logs/kind-create.log" >&2
		kind_cmd export logs --name "$KIND_CLUSTER" "$KIND_STATE/logs/kind-export" >/dev/null 2>&1 || true
		warn "kind create failed; node logs in $KIND_STATE/logs/kind-export"
		die "kind create cluster failed (log: $KIND_STATE/logs/kind-create.log)"
	fi
	log "kind create done after $(elapsed "$t")"
	# One py-serv replica goes on each node: the control plane takes pods too.
	kctl taint nodes "$KIND_CLUSTER-control-plane" node-role.kubernetes.io/control-plane:NoSchedule- >/dev/null 2>&1 || true
	wait_for "both kind nodes to be Ready" 120 kind_nodes_ready || {
		kctl get nodes -o wide >&2 || true
		kctl -n kube-system get pods -o wide >&2 || true
		die "the kind nodes did not become Ready"
	}
	log "nodes Ready after $(elapsed "$t")"
}

# load_kind_images loads our images (busybox, test app, agent) into every
# node unless the node already has that exact image (mark files, reset when
# the cluster is created).
load_kind_images() {
	local name id ref mark=$KIND_STATE/imported
	mkdir -p "$mark"
	for name in busybox testapp agent; do
		id=$(<"$IMAGES_DIR/$name.id")
		[[ -f $mark/$name && $(<"$mark/$name") == "$id" ]] && continue
		ref=$(tar -xOf "$IMAGES_DIR/$name.tar" manifest.json | sed -n 's/.*"RepoTags":\["\([^"]*\)".*/\1/p')
		log "loading $ref into the kind nodes"
		kind_cmd load image-archive --name "$KIND_CLUSTER" "$IMAGES_DIR/$name.tar" >"$KIND_STATE/logs/kind-load.log" 2>&1 ||
			{ cat "$KIND_STATE/logs/kind-load.log" >&2; die "kind load image-archive $IMAGES_DIR/$name.tar failed"; }
		echo "$id" >"$mark/$name"
	done
}

# route_kind_pods routes each node's podCIDR, and the service range, from
# this machine to the node containers, as the processes cluster's pods are
# reachable here on its bridge: the e2e tests send requests straight to pod
# and ClusterIP addresses from this machine. The traffic stays on this
# machine (the nodes are containers on $KIND_BRIDGE). Service traffic from
# here is masqueraded by the node's kube-proxy (its source is outside the pod
# range), so replies come back through the same node.
route_kind_pods() {
	local name cidr ip cp_ip
	while read -r name cidr ip; do
		[[ -n $cidr && -n $ip ]] || die "node $name has no podCIDR or InternalIP yet"
		ip route replace "$cidr" via "$ip" dev "$KIND_BRIDGE"
		[[ $name == "$KIND_CLUSTER-control-plane" ]] && cp_ip=$ip
	done < <(kctl get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
	ip route replace "$KIND_SERVICE_CIDR" via "$cp_ip" dev "$KIND_BRIDGE"
}

# kind_routes lists this machine's routes into the kind cluster.
kind_routes() { ip -4 route show | grep -E "^(${KIND_POD_CIDR%.*.*}\.|${KIND_SERVICE_CIDR%.*.*}\.)" || true; }

# kind_preflight fails early if the kind cluster's address ranges are in use
# on this machine (unless by an earlier kind cluster of ours).
kind_preflight() {
	local r
	r=$(ip -4 route show | grep -v " dev $KIND_BRIDGE" | grep -E "^(${KIND_POD_CIDR%.*.*}\.|${KIND_SERVICE_CIDR%.*.*}\.|${KIND_NODE_SUBNET%.*}\.)" || true)
	[[ -z $r ]] || die "the kind cluster's ranges ($KIND_POD_CIDR, $KIND_SERVICE_CIDR, $KIND_NODE_SUBNET) overlap routes on this machine: $r"
}

kind_up() {
	kind_packages
	kind_preflight
	build_kind
	start_dockerd
	ensure_node_image
	if kind_cluster_exists && [[ -f $KUBECONFIG_OUT ]] && kind_nodes_ready; then
		section "kind cluster $KIND_CLUSTER already running"
	else
		if kind_cluster_exists || [[ -n $(kdocker ps -aq) ]]; then
			warn "found (part of) an earlier kind cluster; tearing it down to start clean"
			kind_teardown
			start_dockerd
		fi
		rm -rf "$KIND_STATE/imported"
		create_kind_cluster
	fi
	route_kind_pods
	load_kind_images
}

# kind_teardown removes the cluster, its containers, volumes and network,
# and stops dockerd (its data root, with the node image, stays as a cache).
kind_teardown() {
	local pid i
	# First a kind run that is still going (an interrupted `make
	# e2e-cluster`): it would go on creating nodes while they are removed.
	for pid in $(kind_runs); do kill -TERM "$pid" 2>/dev/null || true; done
	for ((i = 0; i < 50; i++)); do
		[[ -n $(kind_runs) ]] || break
		sleep 0.1
	done
	for pid in $(kind_runs); do kill -KILL "$pid" 2>/dev/null || true; done
	if dockerd_running; then
		if kind_cluster_exists; then
			log "deleting kind cluster $KIND_CLUSTER"
			kind_cmd delete cluster --name "$KIND_CLUSTER" --kubeconfig "$KUBECONFIG_OUT" >/dev/null 2>&1 || true
		fi
		# Whatever else this dockerd runs is ours (kind's nodes, a failed create).
		mapfile -t ids < <(kdocker ps -aq)
		((${#ids[@]} == 0)) || kdocker rm -f -v "${ids[@]}" >/dev/null || true
		kdocker volume prune -f >/dev/null 2>&1 || true
		kdocker network rm "$KIND_NETWORK" >/dev/null 2>&1 || true
	fi
	if pid=$(dockerd_pid); then
		log "stopping dockerd (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			[[ -d /proc/$pid ]] || break
			sleep 0.1
		done
		[[ ! -d /proc/$pid ]] || kill -KILL "$pid" 2>/dev/null || true
	fi
	kill_kind_strays
	unmount_kind
	local r
	while read -r r; do
		[[ -z $r ]] || ip route del ${r%% *} 2>/dev/null || true
	done < <(kind_routes)
	if ip link show "$KIND_BRIDGE" >/dev/null 2>&1; then ip link delete "$KIND_BRIDGE" || true; fi
	if [[ -z $(kind_mounts) ]]; then
		rm -rf "$KIND_RUN" "$KIND_NODE_DIR/build"
		# Keep the logs (CI artifacts); E2E_PURGE=1 removes them too.
		find "$KIND_STATE" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} + 2>/dev/null || true
		[[ ${E2E_PURGE:-0} != 1 ]] || rm -rf "$KIND_STATE"
	fi
	rm -f "$KUBECONFIG_OUT"
}

# kind_runs lists running kind processes of ours.
kind_runs() {
	local p args
	for p in /proc/[0-9]*; do
		mapfile -d '' -t args 2>/dev/null <"$p/cmdline" || continue
		[[ ${args[0]:-} == "$KIND_BIN" ]] && echo "${p#/proc/}"
	done
	return 0
}

# kind_stray_pids lists processes of our dockerd's world that outlived it:
# its containerd and shims (their arguments name our exec root), a kind run,
# or the throw-away containerd of an interrupted node image build. Bash
# builtins only.
kind_stray_pids() {
	local p args a
	for p in /proc/[0-9]*; do
		mapfile -d '' -t args 2>/dev/null <"$p/cmdline" || continue
		((${#args[@]})) || continue
		[[ ${args[0]} == "$KIND_BIN" ]] && { echo "${p#/proc/}"; continue; }
		for a in "${args[@]}"; do
			if [[ $a == "$KIND_RUN"/* || $a == "$KIND_DOCKER_DATA"/* || $a == "unix://$KIND_DOCKER_SOCK" || $a == "$KIND_NODE_DIR/build/"* ]]; then
				echo "${p#/proc/}"
				break
			fi
		done
	done
}

kill_kind_strays() {
	local pids i
	mapfile -t pids < <(kind_stray_pids)
	((${#pids[@]})) || return 0
	log "killing processes left by kind's dockerd: ${pids[*]}"
	kill -TERM "${pids[@]}" 2>/dev/null || true
	for ((i = 0; i < 30; i++)); do
		sleep 0.1
		mapfile -t pids < <(kind_stray_pids)
		((${#pids[@]})) || return 0
	done
	kill -KILL "${pids[@]}" 2>/dev/null || true
}

# kind_mounts lists mount points under our dockerd's directories and the
# node image's build directory, deepest first.
kind_mounts() {
	awk -v a="$KIND_DOCKER_DATA" -v b="$KIND_RUN" -v c="$KIND_NODE_DIR/build" \
		'index($5, a "/") == 1 || $5 == a || index($5, b "/") == 1 || $5 == b || index($5, c "/") == 1 { print length($5), $5 }' \
		/proc/self/mountinfo | sort -rn | cut -d' ' -f2- | sed 's/\\040/ /g'
}

unmount_kind() {
	local m
	while IFS= read -r m; do
		[[ -n $m ]] || continue
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || warn "cannot unmount $m"
	done < <(kind_mounts)
}

# kind_docker_data_containers lists container and volume directories left
# in dockerd's data root (with dockerd stopped, its own state on disk).
kind_docker_data_containers() {
	local d
	for d in "$KIND_DOCKER_DATA"/containers/* "$KIND_DOCKER_DATA"/volumes/*/; do
		[[ -e $d ]] && echo "${d#"$KIND_DOCKER_DATA"/}"
	done
	return 0
}

# kind_leftovers prints what the kind cluster left behind; true if nothing.
kind_leftovers() {
	local bad=0 out
	out=$(kind_stray_pids | tr '\n' ' ')
	[[ -z $out ]] || { warn "processes: $out"; bad=1; }
	dockerd_pid >/dev/null && { warn "dockerd still runs"; bad=1; }
	out=$(kind_mounts)
	[[ -z $out ]] || { warn "mounts: $out"; bad=1; }
	if ip link show "$KIND_BRIDGE" >/dev/null 2>&1; then warn "interface $KIND_BRIDGE"; bad=1; fi
	out=$( { ip -4 route show | grep -F "${KIND_NODE_SUBNET%.*}."; kind_routes; } || true)
	[[ -z $out ]] || { warn "routes: $out"; bad=1; }
	# dockerd runs with --iptables=false: no rule may name our bridge or
	# subnet. (DOCKER chains as such may belong to another engine on this
	# machine, such as the one TestContainer starts.)
	out=$(iptables-save 2>/dev/null | grep -cF -e "$KIND_BRIDGE" -e "${KIND_NODE_SUBNET%.*}." || true)
	((out == 0)) || { warn "iptables: $out rules name $KIND_BRIDGE or $KIND_NODE_SUBNET"; bad=1; }
	out=$(kind_docker_data_containers)
	[[ -z $out ]] || { warn "containers or volumes left in $KIND_DOCKER_DATA: $out"; bad=1; }
	((bad == 0))
}
