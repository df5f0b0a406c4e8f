# shellcheck shell=bash
# Everything the e2e cluster needs on disk: Debian packages, the binaries built
# from the Go module proxy (Kubernetes, etcd, CoreDNS), the harness's own tools
# and the container images. Sourced by up.sh; each step is cached and cheap
# when there is nothing to do. No image registry is reachable from CI, so
# every image is assembled here from local files (e2e/tools/imgbuild).

# Debian packages: the container runtime and network plumbing the kubelet
# drives, plus what the build needs (gcc for the pause binary) and busybox for
# the debug image used by the tests.
APT_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack
	iproute2 util-linux procps openssl gcc libc6-dev busybox-static)

ensure_packages() {
	local missing=() p
	for p in "${APT_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	section "Installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# containerd's package enables a systemd unit; the harness runs its own
	# containerd with its own socket, so a distro one (if systemd starts it)
	# does not interfere.
	apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
		{ apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
}

# go_build MODULE_DIR OUT_DIR LDFLAGS PACKAGE... builds into a temporary
# directory and renames it into place, so an interrupted build never leaves a
# half-populated cache entry behind.
go_build() {
	local mod=$1 out=$2 ldflags=$3
	shift 3
	rm -rf "$out.tmp"
	mkdir -p "$out.tmp"
	(cd "$mod" && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" "$@")
	rm -rf "$out"
	mv "$out.tmp" "$out"
}

# kubeadm is only for the kind node image, but cheap next to the others (its
# packages are mostly theirs) and keeps one cache entry per version.
K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl kubeadm)

build_kubernetes() {
	local c missing=()
	for c in "${K8S_COMMANDS[@]}"; do [[ -x $K8S_BIN/$c ]] || missing+=("$c"); done
	((${#missing[@]})) || return 0
	section "Building Kubernetes $K8S_VERSION (${missing[*]}) from the Go module proxy — ~11 min cold on 2 cores"
	local start minor ld p pkgs=()
	start=$(now_s)
	minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	# The version stamps `make` in kubernetes/kubernetes would set; without them
	# the binaries call themselves v0.0.0 and kubectl warns about version skew.
	ld="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
		ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
	if ((${#missing[@]} == ${#K8S_COMMANDS[@]})); then
		go_build "$E2E_ROOT/tools/k8s" "$K8S_BIN" "$ld" "${pkgs[@]}"
	else
		# A cache from before a command was added: build only what it lacks.
		go_build "$E2E_ROOT/tools/k8s" "$K8S_BIN.add" "$ld" "${pkgs[@]}"
		mv "$K8S_BIN.add"/* "$K8S_BIN/"
		rmdir "$K8S_BIN.add"
	fi
	log "built in $(elapsed "$start")"
}

build_etcd() {
	[[ -x $ETCD_BIN/etcd ]] && return 0
	section "Building etcd $ETCD_VERSION"
	local start
	start=$(now_s)
	go_build "$E2E_ROOT/tools/etcd" "$ETCD_BIN" "-s -w" .
	log "built in $(elapsed "$start")"
}

build_coredns() {
	[[ -x $COREDNS_BIN/coredns ]] && return 0
	section "Building CoreDNS $COREDNS_VERSION"
	local start
	start=$(now_s)
	go_build "$E2E_ROOT/tools/coredns" "$COREDNS_BIN" "-s -w" .
	log "built in $(elapsed "$start")"
}

# build_tools builds the harness's own programs every time (Go's build cache
# makes that a no-op when nothing changed): the image builder, the runc
# wrapper, the test app, the mirrord binary for the agent image and pause.
build_tools() {
	section "Building harness tools, test app, mirrord agent binary"
	local start
	start=$(now_s)
	mkdir -p "$TOOLS_BIN"
	(cd "$E2E_ROOT/tools" && GOWORK=off CGO_ENABLED=0 go build -trimpath -o "$TOOLS_BIN/" ./imgbuild)
	(cd "$E2E_ROOT/tools" && GOWORK=off CGO_ENABLED=0 go build -trimpath \
		-ldflags "-X main.realRunc=$(command -v runc)" -o "$TOOLS_BIN/" ./runcwrap)
	(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$TOOLS_BIN/testapp" ./e2e/testapp)
	# The agent image runs the project's own static binary, built like
	# `make build` builds it.
	(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X github.com/mirrord-go/mirrord/version.Version=e2e" -o "$TOOLS_BIN/mirrord" ./cmd/mirrord) ||
		die "building ./cmd/mirrord for the agent image failed (see above)"
	if [[ ! -x $TOOLS_BIN/pause || $E2E_ROOT/tools/pause/pause.c -nt $TOOLS_BIN/pause ]]; then
		gcc -static -O2 -s -Wall -Wextra -o "$TOOLS_BIN/pause" "$E2E_ROOT/tools/pause/pause.c"
	fi
	log "done in $(elapsed "$start")"
}

# image NAME REF INPUT_FILES... -- IMGBUILD_ARGS... builds $IMAGES_DIR/NAME.tar
# unless a tar for exactly these inputs (content hash of the files and the
# arguments) is cached, and records its image ID in $IMAGES_DIR/NAME.id.
image() {
	local name=$1 ref=$2 key
	shift 2
	local inputs=()
	while [[ $1 != -- ]]; do inputs+=("$1"); shift; done
	shift
	key=$( { sha256sum "${inputs[@]}" | awk '{print $1}'; printf '%s\n' "$ref" "$@"; } | sha256sum | cut -c1-16)
	if [[ -f $IMAGES_DIR/$name.key && $(<"$IMAGES_DIR/$name.key") == "$key" && -f $IMAGES_DIR/$name.tar ]]; then
		return 0
	fi
	log "image $ref"
	"$TOOLS_BIN/imgbuild" -o "$IMAGES_DIR/$name.tar" -ref "$ref" "$@" >"$IMAGES_DIR/$name.id"
	echo "$key" >"$IMAGES_DIR/$name.key"
}

build_images() {
	section "Building images"
	local start applet links=()
	start=$(now_s)
	mkdir -p "$IMAGES_DIR"
	image pause "$PAUSE_IMAGE" "$TOOLS_BIN/pause" -- \
		-file "$TOOLS_BIN/pause=/pause" -entrypoint /pause
	image coredns "$COREDNS_IMAGE" "$COREDNS_BIN/coredns" -- \
		-file "$COREDNS_BIN/coredns=/coredns" -entrypoint /coredns
	# busybox: a shell, wget, nslookup, nsenter, ps and ip for the tests' debug
	# and privileged pods.
	for applet in $(/bin/busybox --list); do
		[[ $applet == busybox ]] || links+=(-symlink "/bin/$applet=busybox")
	done
	image busybox "$BUSYBOX_IMAGE" /bin/busybox -- \
		-file /bin/busybox=/bin/busybox -dir /tmp:1777 -dir /root:0700 "${links[@]}" -cmd sh
	image testapp "$TESTAPP_IMAGE" "$TOOLS_BIN/testapp" "$E2E_ROOT/testapp/config.json" -- \
		-file "$TOOLS_BIN/testapp=/testapp" -file "$E2E_ROOT/testapp/config.json=/app/config.json:0644" \
		-dir /tmp:1777 -entrypoint /testapp -cmd serve -workdir /app
	image agent "$AGENT_IMAGE" "$TOOLS_BIN/mirrord" -- \
		-file "$TOOLS_BIN/mirrord=/mirrord" -dir /tmp:1777 -entrypoint /mirrord -entrypoint agent
	log "done in $(elapsed "$start")"
}

IMAGE_NAMES=(pause coredns busybox testapp agent)

build_all() {
	ensure_packages
	command -v go >/dev/null || die "Go is needed to build the cluster binaries"
	build_kubernetes
	build_etcd
	build_coredns
	build_tools
	build_images
}
