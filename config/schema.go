package config

import (
	"reflect"
)

// Config is the whole mirrord configuration. Field names follow the
// upstream documentation (json tags are the config keys); defaults are set
// by Default. A nil pointer means "not set": mirrord picks a value at run
// time (for example the namespace of the current kube context).
type Config struct {
	AcceptInvalidCertificates *bool      `json:"accept_invalid_certificates" env:"MIRRORD_ACCEPT_INVALID_CERTIFICATES" doc:"Accept invalid TLS certificates from the Kubernetes API server. Unset: use the kubeconfig's setting."`
	SkipProcesses             StringList `json:"skip_processes" env:"MIRRORD_SKIP_PROCESSES" doc:"Processes (by executable name) that mirrord does not load into; they run fully locally."`
	SkipBuildTools            bool       `json:"skip_build_tools" env:"MIRRORD_SKIP_BUILD_TOOLS" doc:"Do not load into common build tools (go, gcc, cargo, ...)."`
	SkipExtraBuildTools       StringList `json:"skip_extra_build_tools" env:"MIRRORD_SKIP_EXTRA_BUILD_TOOLS" doc:"More build tools to skip, on top of the built-in list."`
	SkipSIP                   StringList `json:"skip_sip" env:"MIRRORD_SKIP_SIP" doc:"macOS only: binaries not to patch for SIP. Accepted and ignored on Linux."`
	SIPBinaries               StringList `json:"sip_binaries" doc:"macOS only: binaries to treat as SIP-protected. Accepted and ignored on Linux."`
	Engine                    Engine     `json:"engine" env:"MIRRORD_ENGINE" doc:"How mirrord reaches into the program (not an upstream key): auto (the preload library for dynamically linked programs, the netstack sandbox for Go and static ones), preload or netstack."`
	Target                    Target     `json:"target" doc:"The pod (or workload) to run in the context of: a path string or {path, namespace}."`
	// ConnectTCP is the address of an agent that is already running; mirrord
	// then skips Kubernetes and talks to it directly (used by tests).
	ConnectTCP    *string         `json:"connect_tcp" env:"MIRRORD_CONNECT_TCP" doc:"host:port of an already running agent; skips Kubernetes."`
	Agent         AgentConfig     `json:"agent"`
	Container     ContainerConfig `json:"container"`
	Feature       FeatureConfig   `json:"feature"`
	Operator      *bool           `json:"operator" env:"MIRRORD_OPERATOR_ENABLE" doc:"Use the mirrord operator. Operator features are not available in this implementation."`
	Profile       *string         `json:"profile" doc:"Name of a mirrord profile (an operator feature)."`
	Kubeconfig    *string         `json:"kubeconfig" env:"MIRRORD_KUBECONFIG" doc:"Path to the kubeconfig. Unset: $KUBECONFIG, then ~/.kube/config."`
	KubeContext   *string         `json:"kube_context" env:"MIRRORD_KUBE_CONTEXT" doc:"Kube context to use. Unset: the current context."`
	Telemetry     bool            `json:"telemetry" env:"MIRRORD_TELEMETRY" doc:"Accepted for compatibility; this implementation sends no telemetry."`
	UseProxy      bool            `json:"use_proxy" env:"MIRRORD_PROXY" doc:"Use HTTP(S)_PROXY for mirrord's own requests to the cluster."`
	InternalProxy ProxyConfig     `json:"internal_proxy"`
	ExternalProxy ProxyConfig     `json:"external_proxy"`
	Experimental  Experimental    `json:"experimental"`

	warnings []string
}

// AgentConfig configures the agent pod.
type AgentConfig struct {
	LogLevel             string           `json:"log_level" env:"MIRRORD_AGENT_RUST_LOG"`
	JSONLog              bool             `json:"json_log" env:"MIRRORD_AGENT_JSON_LOG"`
	Namespace            *string          `json:"namespace" env:"MIRRORD_AGENT_NAMESPACE"`
	Image                AgentImage       `json:"image" env:"MIRRORD_AGENT_IMAGE"`
	ImagePullPolicy      string           `json:"image_pull_policy" env:"MIRRORD_AGENT_IMAGE_PULL_POLICY"`
	ImagePullSecrets     []map[string]any `json:"image_pull_secrets"`
	TTL                  uint16           `json:"ttl" env:"MIRRORD_AGENT_TTL"`
	Ephemeral            bool             `json:"ephemeral" env:"MIRRORD_EPHEMERAL_CONTAINER"`
	CommunicationTimeout *uint16          `json:"communication_timeout" env:"MIRRORD_AGENT_COMMUNICATION_TIMEOUT"`
	StartupTimeout       uint64           `json:"startup_timeout" env:"MIRRORD_AGENT_STARTUP_TIMEOUT"`
	// ReconnectTimeout (seconds; not in upstream, whose sessions end with
	// their connection) is how long a session tries to get back to its
	// agent after the connection dropped, and how long the agent keeps
	// running for it meanwhile. 0 ends the session with its connection.
	ReconnectTimeout     uint64            `json:"reconnect_timeout" env:"MIRRORD_AGENT_RECONNECT_TIMEOUT"`
	NetworkInterface     *string           `json:"network_interface" env:"MIRRORD_AGENT_NETWORK_INTERFACE"`
	FlushConnections     bool              `json:"flush_connections" env:"MIRRORD_AGENT_STEALER_FLUSH_CONNECTIONS"`
	DisabledCapabilities []Capability      `json:"disabled_capabilities"`
	Tolerations          []map[string]any  `json:"tolerations"`
	Resources            map[string]any    `json:"resources"`
	CheckOutOfPods       bool              `json:"check_out_of_pods"`
	Privileged           bool              `json:"privileged"`
	NFTables             bool              `json:"nftables"`
	DNS                  AgentDNS          `json:"dns"`
	Labels               map[string]string `json:"labels"`
	Annotations          map[string]string `json:"annotations"`
	NodeSelector         map[string]string `json:"node_selector"`
	ServiceAccount       *string           `json:"service_account"`
	Metrics              *string           `json:"metrics"`
}

// AgentDNS tunes the agent's DNS client.
type AgentDNS struct {
	Timeout  *uint32 `json:"timeout"`
	Attempts *uint32 `json:"attempts"`
}

// ContainerConfig configures `mirrord container`.
type ContainerConfig struct {
	CLIImage          string     `json:"cli_image"`
	CLIExtraArgs      []string   `json:"cli_extra_args"`
	CLIPreventCleanup bool       `json:"cli_prevent_cleanup"`
	CLIImageLibPath   string     `json:"cli_image_lib_path"`
	OverrideHostIP    *IPAddress `json:"override_host_ip"`
}

// FeatureConfig selects what the local process gets from the target.
type FeatureConfig struct {
	Env         EnvConfig                   `json:"env"`
	FS          FSConfig                    `json:"fs"`
	Network     NetworkConfig               `json:"network"`
	CopyTarget  CopyTarget                  `json:"copy_target"`
	Hostname    bool                        `json:"hostname"`
	SplitQueues map[string]SplitQueueConfig `json:"split_queues"`
}

// EnvConfig selects the environment variables taken from the target.
type EnvConfig struct {
	Include         StringList        `json:"include" env:"MIRRORD_OVERRIDE_ENV_VARS_INCLUDE"`
	Exclude         StringList        `json:"exclude" env:"MIRRORD_OVERRIDE_ENV_VARS_EXCLUDE"`
	Override        map[string]string `json:"override"`
	Mapping         map[string]string `json:"mapping"`
	Unset           StringList        `json:"unset"`
	EnvFile         *string           `json:"env_file" env:"MIRRORD_OVERRIDE_ENV_VARS_FILE"`
	LoadFromProcess *bool             `json:"load_from_process" env:"MIRRORD_ENV_LOAD_FROM_PROCESS"`
}

func (e *EnvConfig) decodeConfig(d *decoder, p Path, v any) {
	if b, ok := isBool(v); ok {
		if !b {
			*e = EnvConfig{Exclude: StringList{"*"}}
		}
		return
	}
	d.decodeStruct(p, v, reflect.ValueOf(e).Elem())
}

// FSConfig selects which files are read from the target.
type FSConfig struct {
	Mode               FsMode            `json:"mode" env:"MIRRORD_FILE_MODE"`
	ReadWrite          StringList        `json:"read_write" env:"MIRRORD_FILE_READ_WRITE_PATTERN"`
	ReadOnly           StringList        `json:"read_only" env:"MIRRORD_FILE_READ_ONLY_PATTERN"`
	Local              StringList        `json:"local" env:"MIRRORD_FILE_LOCAL_PATTERN"`
	NotFound           StringList        `json:"not_found"`
	Mapping            map[string]string `json:"mapping"`
	ReadonlyFileBuffer uint64            `json:"readonly_file_buffer"`
}

func (f *FSConfig) decodeConfig(d *decoder, p Path, v any) {
	switch v := v.(type) {
	case bool:
		if v {
			f.Mode = FsRead
		} else {
			f.Mode = FsLocal
		}
	case string:
		f.Mode.decodeConfig(d, p, v)
	case map[string]any:
		d.decodeStruct(p, v, reflect.ValueOf(f).Elem())
	default:
		d.errs.add(p, "expected a mode (%s), a boolean or an object, got %s", fsModes.list(), describe(v))
	}
}

func (FSConfig) jsonSchemaAlternatives() []map[string]any {
	return []map[string]any{{"type": "boolean"}, fsModes.schema()}
}

// NetworkConfig selects the target's network features.
type NetworkConfig struct {
	Incoming IncomingConfig `json:"incoming"`
	Outgoing OutgoingConfig `json:"outgoing"`
	DNS      DNSConfig      `json:"dns"`
	IPv6     bool           `json:"ipv6" env:"MIRRORD_ENABLE_IPV6"`
}

func (n *NetworkConfig) decodeConfig(d *decoder, p Path, v any) {
	if b, ok := isBool(v); ok {
		if !b {
			n.Incoming.Mode = IncomingOff
			n.Outgoing.TCP, n.Outgoing.UDP = false, false
			n.DNS.Enabled = false
		}
		return
	}
	d.decodeStruct(p, v, reflect.ValueOf(n).Elem())
}

func (NetworkConfig) jsonSchemaAlternatives() []map[string]any {
	return []map[string]any{{"type": "boolean"}}
}

// IncomingConfig says how the target's incoming traffic reaches the local
// process.
type IncomingConfig struct {
	Mode              IncomingMode      `json:"mode" env:"MIRRORD_AGENT_TCP_STEAL_TRAFFIC"`
	HTTPFilter        HTTPFilterConfig  `json:"http_filter"`
	PortMapping       []PortPair        `json:"port_mapping"`
	ListenPorts       []PortPair        `json:"listen_ports"`
	IgnoreLocalhost   bool              `json:"ignore_localhost"`
	IgnorePorts       []uint16          `json:"ignore_ports"`
	Ports             []uint16          `json:"ports"`
	OnConcurrentSteal ConcurrentSteal   `json:"on_concurrent_steal" env:"MIRRORD_OPERATOR_ON_CONCURRENT_STEAL"`
	HTTPSDelivery     TLSDeliveryConfig `json:"https_delivery"`
	TLSPorts          []TLSPortConfig   `json:"tls_ports"`
}

func (in *IncomingConfig) decodeConfig(d *decoder, p Path, v any) {
	switch v := v.(type) {
	case bool:
		if v {
			in.Mode = IncomingMirror
		} else {
			in.Mode = IncomingOff
		}
	case string:
		in.Mode.decodeConfig(d, p, v)
	case map[string]any:
		d.decodeStruct(p, v, reflect.ValueOf(in).Elem())
	default:
		d.errs.add(p, "expected a mode (%s), a boolean or an object, got %s", incomingModes.list(), describe(v))
	}
}

func (IncomingConfig) jsonSchemaAlternatives() []map[string]any {
	return []map[string]any{{"type": "boolean"}, incomingModes.schema()}
}

// HTTPFilterConfig picks the HTTP requests a filtered steal takes.
type HTTPFilterConfig struct {
	HeaderFilter *string       `json:"header_filter" env:"MIRRORD_HTTP_HEADER_FILTER"`
	PathFilter   *string       `json:"path_filter" env:"MIRRORD_HTTP_PATH_FILTER"`
	MethodFilter *string       `json:"method_filter" env:"MIRRORD_HTTP_METHOD_FILTER"`
	AllOf        []InnerFilter `json:"all_of"`
	AnyOf        []InnerFilter `json:"any_of"`
	Ports        PortList      `json:"ports" env:"MIRRORD_HTTP_FILTER_PORTS"`
}

// IsSet reports whether any request filter is configured.
func (h HTTPFilterConfig) IsSet() bool {
	return h.HeaderFilter != nil || h.PathFilter != nil || h.MethodFilter != nil || h.AllOf != nil || h.AnyOf != nil
}

// InnerFilter is one element of all_of / any_of.
type InnerFilter struct {
	Header *string `json:"header"`
	Path   *string `json:"path"`
	Method *string `json:"method"`
}

// PortList is a list of ports that may also be written as one port.
type PortList []uint16

func (l *PortList) decodeConfig(d *decoder, p Path, v any) {
	if _, ok := v.([]any); !ok {
		v = []any{v}
	}
	var out []uint16
	d.decode(p, v, reflect.ValueOf(&out).Elem())
	*l = out
}

func (l *PortList) decodeEnv(d *decoder, p Path, s string) {
	var vs []any
	for _, part := range splitList(s) {
		vs = append(vs, jsonNumber(part))
	}
	l.decodeConfig(d, p, vs)
}

func (PortList) jsonSchema() map[string]any {
	port := map[string]any{"type": "integer", "minimum": 0, "maximum": 65535}
	return map[string]any{"anyOf": []any{port, map[string]any{"type": "array", "items": port}}}
}

// TLSDeliveryConfig says how stolen HTTPS traffic is delivered locally.
type TLSDeliveryConfig struct {
	Protocol   TLSProtocol `json:"protocol"`
	TrustRoots []string    `json:"trust_roots"`
	ServerName *string     `json:"server_name"`
	ServerCert *string     `json:"server_cert"`
}

// TLSPortConfig is a port of the target that serves TLS (HTTPS): with a
// steal whose http_filter covers the port, the agent ends TLS there with
// the target's own certificate and key, filters the requests inside,
// delivers the matching ones locally per https_delivery, and re-encrypts
// the others to the target's app. Paths are inside the target's file
// system (the container's, as its app sees it).
type TLSPortConfig struct {
	Port    uint16 `json:"port" doc:"The target's port that serves TLS."`
	CertPEM string `json:"cert_pem" doc:"PEM file with the certificate chain the target's app serves on the port, end-entity first, as a path in the target's file system. Other PEM entries in the file are skipped."`
	KeyPEM  string `json:"key_pem" doc:"PEM file with the private key of cert_pem, as a path in the target's file system (may be the same file)."`
	// ClientCertPEM and ClientKeyPEM: what the agent presents to the
	// target's app, which asks for client certificates (mutual TLS),
	// when it re-encrypts the requests that stay with it.
	ClientCertPEM *string `json:"client_cert_pem" doc:"For a target's app that asks its clients for certificates (mutual TLS): a PEM certificate chain in the target's file system that the agent presents to it when it passes requests on. Without it the agent connects anonymously."`
	ClientKeyPEM  *string `json:"client_key_pem" doc:"The private key of client_cert_pem, in the target's file system."`
}

// OutgoingConfig says which outgoing connections go through the target.
type OutgoingConfig struct {
	TCP             bool          `json:"tcp" env:"MIRRORD_TCP_OUTGOING"`
	UDP             bool          `json:"udp" env:"MIRRORD_UDP_OUTGOING"`
	IgnoreLocalhost bool          `json:"ignore_localhost"`
	Filter          *FilterConfig `json:"filter"`
	UnixStreams     StringList    `json:"unix_streams" env:"MIRRORD_OUTGOING_REMOTE_UNIX_STREAMS"`
}

func (o *OutgoingConfig) decodeConfig(d *decoder, p Path, v any) {
	if b, ok := isBool(v); ok {
		o.TCP, o.UDP = b, b
		return
	}
	d.decodeStruct(p, v, reflect.ValueOf(o).Elem())
}

func (OutgoingConfig) jsonSchemaAlternatives() []map[string]any {
	return []map[string]any{{"type": "boolean"}}
}

// FilterConfig is a local or a remote list of address filters (never both).
type FilterConfig struct {
	Local  StringList `json:"local"`
	Remote StringList `json:"remote"`
}

func (f *FilterConfig) decodeConfig(d *decoder, p Path, v any) {
	obj, ok := v.(map[string]any)
	if ok && obj["local"] != nil && obj["remote"] != nil {
		d.errs.add(p, "set either \"local\" or \"remote\", not both")
		return
	}
	d.decodeStruct(p, v, reflect.ValueOf(f).Elem())
}

// DNSConfig says which name lookups are resolved by the target.
type DNSConfig struct {
	Enabled bool          `json:"enabled" env:"MIRRORD_REMOTE_DNS"`
	Filter  *FilterConfig `json:"filter"`
}

func (c *DNSConfig) decodeConfig(d *decoder, p Path, v any) {
	if b, ok := isBool(v); ok {
		c.Enabled = b
		return
	}
	d.decodeStruct(p, v, reflect.ValueOf(c).Elem())
}

func (DNSConfig) jsonSchemaAlternatives() []map[string]any {
	return []map[string]any{{"type": "boolean"}}
}

// CopyTarget runs the session against a copy of the target pod (an
// operator feature upstream, built in here); ScaleDown scales the
// target's workload to 0 for the session.
type CopyTarget struct {
	Enabled   bool `json:"enabled"`
	ScaleDown bool `json:"scale_down"`
}

func (c *CopyTarget) decodeConfig(d *decoder, p Path, v any) {
	if b, ok := isBool(v); ok {
		c.Enabled = b
		return
	}
	// The object form means "enabled" unless it says otherwise.
	c.Enabled = true
	d.decodeStruct(p, v, reflect.ValueOf(c).Elem())
}

func (CopyTarget) jsonSchemaAlternatives() []map[string]any {
	return []map[string]any{{"type": "boolean"}}
}

// SplitQueueConfig is one queue of feature.split_queues (an operator feature).
type SplitQueueConfig struct {
	QueueType     string            `json:"queue_type"`
	MessageFilter map[string]string `json:"message_filter"`
}

// ProxyConfig configures the internal (and external) proxy.
type ProxyConfig struct {
	StartIdleTimeout uint64     `json:"start_idle_timeout"`
	IdleTimeout      uint64     `json:"idle_timeout"`
	SocketTimeout    *uint64    `json:"socket_timeout,omitempty"`
	LogLevel         string     `json:"log_level"`
	LogDestination   *string    `json:"log_destination"`
	JSONLog          bool       `json:"json_log"`
	HostIP           *IPAddress `json:"host_ip,omitempty"`
	TLSEnable        *bool      `json:"tls_enable,omitempty"`
}

// Experimental holds upstream's experimental switches. Most concern the
// libc hooks and are accepted for compatibility.
type Experimental struct {
	TCPPing4Mock                   bool    `json:"tcp_ping4_mock"`
	TrustAnyCertificate            bool    `json:"trust_any_certificate"`
	EnableExecHooksLinux           bool    `json:"enable_exec_hooks_linux"`
	HideIPv6Interfaces             bool    `json:"hide_ipv6_interfaces"`
	DisableReuseaddr               bool    `json:"disable_reuseaddr"`
	UseDevNull                     bool    `json:"use_dev_null"`
	IdleLocalHTTPConnectionTimeout uint64  `json:"idle_local_http_connection_timeout"`
	IgnoreSystemProxyConfig        bool    `json:"ignore_system_proxy_config"`
	Readlink                       bool    `json:"readlink"`
	ReadonlyFileBuffer             *uint64 `json:"readonly_file_buffer"`
}
