# shellcheck shell=bash
# Certificates, kubeconfigs and component configuration for the processes
# cluster. Sourced by up.sh; everything is regenerated on every fresh start
# (a second or two), so a changed node IP or version never meets stale files.

# --- PKI -------------------------------------------------------------------
# One CA signs everything. ECDSA P-256 keys: fast to generate, accepted by
# every component (the service-account tokens become ES256).

# cert NAME SUBJECT USAGE [SAN] issues $PKI/NAME.{crt,key}; USAGE is
# serverAuth or clientAuth.
cert() {
	local name=$1 subj=$2 usage=$3 san=${4:-}
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=$usage"
		[[ -z $san ]] || echo "subjectAltName=$san"
	} >"$PKI/$name.ext"
	openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 365 -extfile "$PKI/$name.ext" \
		-out "$PKI/$name.crt" 2>/dev/null
	rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

generate_pki() {
	local ip=$1
	rm -rf "$PKI"
	mkdir -p "$PKI"
	chmod 700 "$PKI"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 3650 -subj "/CN=mirrord-e2e-ca" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	cert apiserver "/CN=kube-apiserver" serverAuth \
		"IP:127.0.0.1,IP:$ip,IP:$KUBERNETES_SVC_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
	cert kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:$ip,IP:127.0.0.1,DNS:$NODE_NAME"
	# Client identities. The Node authorizer and RBAC's bootstrap roles know
	# these names, so no extra RBAC objects are needed.
	cert admin "/O=system:masters/CN=mirrord-e2e-admin" clientAuth
	cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
	cert controller-manager "/CN=system:kube-controller-manager" clientAuth
	cert scheduler "/CN=system:kube-scheduler" clientAuth
	cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
	cert kube-proxy "/CN=system:kube-proxy" clientAuth
	# Service-account token signing key.
	openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key"
	openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

# kubeconfig FILE USER: a kubeconfig for $PKI/USER.{crt,key} with the data
# embedded, so the file can be copied elsewhere (CI artifacts, other users).
kubeconfig() {
	local file=$1 user=$2
	umask 077
	cat >"$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: mirrord-e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$user.crt")
    client-key-data: $(base64 -w0 "$PKI/$user.key")
contexts:
- name: mirrord-e2e
  context:
    cluster: mirrord-e2e
    user: $user
    namespace: default
current-context: mirrord-e2e
KUBECONFIG
	umask 022
}

# --- component configuration ----------------------------------------------

# cluster_cidrs and service_cidrs print the pod and Service ranges as the
# components take them: comma-separated, IPv4 first.
cluster_cidrs() { if dual_stack; then echo "$POD_CIDR,$POD_CIDR6"; else echo "$POD_CIDR"; fi; }
service_cidrs() { if dual_stack; then echo "$SERVICE_CIDR,$SERVICE_CIDR6"; else echo "$SERVICE_CIDR"; fi; }

write_configs() {
	local ip=$1 cfg=$E2E_STATE/config
	mkdir -p "$cfg" "$E2E_STATE/cni/net.d" "$LOGS"
	for u in controller-manager scheduler kubelet kube-proxy; do
		kubeconfig "$cfg/$u.kubeconfig" "$u"
	done
	mkdir -p "$(dirname "$KUBECONFIG_OUT")"
	kubeconfig "$KUBECONFIG_OUT" admin

	# containerd: its own root, state and socket, so it never meets a
	# distro containerd or Docker's. The runtime binary is runcwrap (see
	# e2e/tools/runcwrap); restrict_oom_score_adj keeps containerd from asking
	# for oom_score_adj values below its own, which needs CAP_SYS_RESOURCE.
	# Network namespaces live under the state dir, not /run/netns.
	cat >"$cfg/containerd.toml" <<TOML
version = 2
root = "$E2E_STATE/containerd"
state = "$E2E_RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.internal.v1.opt"]
  path = "$E2E_STATE/containerd-opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$TOOLS_BIN/runcwrap"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$E2E_STATE/cni/net.d"
    max_conf_num = 1
TOML

	# CNI: one Linux bridge with host-local IPAM. No ipMasq: pods have no
	# business reaching beyond this machine (the traffic rule), and without it
	# the bridge plugin installs no iptables rules to clean up. Dual-stack:
	# a second range, and a default route of each family via the bridge.
	local ranges="[{ \"subnet\": \"$NODE_POD_SUBNET\" }]" routes='{ "dst": "0.0.0.0/0" }'
	if dual_stack; then
		ranges+=", [{ \"subnet\": \"$NODE_POD_SUBNET6\" }]"
		routes+=', { "dst": "::/0" }'
	fi
	cat >"$E2E_STATE/cni/net.d/10-mirrord-e2e.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "mirrord-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [$ranges],
        "routes": [$routes],
        "dataDir": "$E2E_STATE/cni/ipam"
      }
    }
  ]
}
JSON

	# kubelet: everything it writes goes under $E2E_STATE; listens on the
	# node IP (the API server reaches it there) and on loopback for healthz.
	# Image GC is off: images cannot be pulled back once deleted.
	cat >"$cfg/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDNS: [$DNS_SVC_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: ""
podLogsDir: $E2E_STATE/pod-logs
failSwapOn: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
rotateCertificates: false
shutdownGracePeriod: 0s
YAML

	# kube-proxy, iptables mode (the kernel may lack the dummy module that
	# ipvs mode needs). conntrack settings 0 = leave the host's sysctls alone;
	# localhostNodePorts off = leave route_localnet alone.
	cat >"$cfg/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $cfg/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $(cluster_cidrs)
mode: iptables
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["primary"]
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false, minSyncPeriod: 1s, syncPeriod: 30s}
YAML
}

# Sysctls the kubelet and the bridge plugin change; saved before the first
# start and restored by teardown.
SYSCTLS=(net.ipv4.ip_forward net.ipv6.conf.all.forwarding net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

save_sysctls() {
	local f=$E2E_STATE/sysctl.saved k
	[[ -f $f ]] && return 0
	for k in "${SYSCTLS[@]}"; do
		echo "$k=$(sysctl -n "$k" 2>/dev/null)"
	done >"$f.tmp"
	mv "$f.tmp" "$f"
}
