package config

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/dlclark/regexp2"

	"github.com/mirrord-go/mirrord/addrfilter"
	"github.com/mirrord-go/mirrord/httpfilter"
)

const (
	mib                   = 1 << 20
	maxReadonlyFileBuffer = 15 * mib
)

// scalable are the target kinds copy_target.scale_down can scale to 0.
var scalable = map[string]bool{"deployment": true, "rollout": true, "statefulset": true, "replicaset": true}

// validate checks the rules that involve more than one key, and values
// whose syntax is richer than their type (regexes, filters, addresses).
// Warnings are stored on c.
func (c *Config) validate() error {
	var es Errors
	warn := func(format string, args ...any) { c.warnings = append(c.warnings, fmt.Sprintf(format, args...)) }

	// Target-dependent rules.
	f := &c.Feature
	// Without any target the file is still valid: -t or the IDE may
	// supply one. Only an explicit "targetless" is checked here; the
	// commands check again once the target is final.
	if c.Target.Path != nil && c.Target.Targetless() {
		if f.Network.Incoming.Mode == IncomingSteal {
			es.add("feature.network.incoming.mode", "steal mode needs a target; set \"target\" (or -t) or use mode \"mirror\"")
		}
		if c.Agent.Ephemeral {
			es.add("agent.ephemeral", "an ephemeral agent container needs a target pod; set \"target\" or \"agent.ephemeral\": false")
		}
		if f.CopyTarget.Enabled {
			es.add("feature.copy_target", "copy_target needs a target; set \"target\" or disable copy_target")
		}
	}
	if c.Agent.Ephemeral && c.Agent.Namespace != nil {
		warn("agent.namespace is ignored with agent.ephemeral: the agent runs in the target pod")
	}
	// copy_target is built in (upstream needs its operator for it).
	if ct := f.CopyTarget; ct.ScaleDown {
		switch {
		case !ct.Enabled:
			warn("feature.copy_target.scale_down has no effect while copy_target is disabled")
		case c.Target.Path != nil && !c.Target.Targetless() && !scalable[c.Target.Path.Kind]:
			es.add("feature.copy_target.scale_down", "target %s cannot be scaled down; scale_down works with deployment, rollout, statefulset and replicaset targets (remove scale_down, or keep copy_target alone)", c.Target.Path)
		case c.Agent.Ephemeral:
			// The replicas are restored by the agent's Job when mirrord
			// is killed; an ephemeral agent runs with the pod's own
			// service account and no Job.
			es.add("feature.copy_target.scale_down", "scale_down needs the Job agent, which restores the replicas if mirrord is killed; set agent.ephemeral to false, or remove scale_down")
		}
	}
	if c.Operator != nil && *c.Operator {
		warn("operator: the mirrord operator is not available in this implementation; mirrord runs without it")
	}
	if len(f.SplitQueues) > 0 {
		warn("feature.split_queues: operator features are not available in this implementation")
	}

	// Agent.
	for i, secret := range c.Agent.ImagePullSecrets {
		if _, ok := secret["name"].(string); !ok {
			warn("agent.image_pull_secrets[%d] has no \"name\"; the entry is ignored", i)
		}
	}
	if c.Agent.Metrics != nil {
		if err := checkSocketAddr(*c.Agent.Metrics); err != nil {
			es.add("agent.metrics", "%v", err)
		}
	}

	// Environment.
	for _, k := range sortedKeys(f.Env.Mapping) {
		if _, err := regexp2.Compile(k, regexp2.None); err != nil {
			es.add("feature.env.mapping", "invalid regex %q: %v", k, err)
		}
	}

	// Files.
	fs := &f.FS
	if fs.ReadonlyFileBuffer > maxReadonlyFileBuffer {
		es.add("feature.fs.readonly_file_buffer", "%d bytes is more than the maximum of 15 MiB (%d)", fs.ReadonlyFileBuffer, maxReadonlyFileBuffer)
	} else if fs.ReadonlyFileBuffer > mib {
		warn("feature.fs.readonly_file_buffer: %d bytes is more than 1 MiB; large buffers slow down reads of small files", fs.ReadonlyFileBuffer)
	}
	checkPatterns(&es, "feature.fs.read_write", fs.ReadWrite)
	checkPatterns(&es, "feature.fs.read_only", fs.ReadOnly)
	checkPatterns(&es, "feature.fs.local", fs.Local)
	checkPatterns(&es, "feature.fs.not_found", fs.NotFound)
	for _, k := range sortedKeys(fs.Mapping) {
		if _, err := regexp.Compile(k); err != nil {
			es.add("feature.fs.mapping", "invalid regex %q: %v", k, err)
		}
	}
	if c.Experimental.ReadonlyFileBuffer != nil {
		es.add("experimental.readonly_file_buffer", "this key moved to feature.fs.readonly_file_buffer")
	}
	if c.Experimental.Readlink {
		warn("experimental.readlink is deprecated: readlink is always handled")
	}

	// Incoming.
	in := &f.Network.Incoming
	if len(in.IgnorePorts) > 0 && len(in.Ports) > 0 {
		es.add("feature.network.incoming.ignore_ports", "set either \"ports\" or \"ignore_ports\", not both")
	}
	checkPortPairs(&es, "feature.network.incoming.port_mapping", in.PortMapping, warn)
	checkPortPairs(&es, "feature.network.incoming.listen_ports", in.ListenPorts, nil)
	checkHTTPFilter(&es, "feature.network.incoming.http_filter", &in.HTTPFilter)
	if d := in.HTTPSDelivery; d.Protocol == "tls" {
		if d.TrustRoots != nil && len(d.TrustRoots) == 0 {
			es.add("feature.network.incoming.https_delivery.trust_roots", "the list is empty; omit it or name at least one certificate file")
		}
		if len(d.TrustRoots) > 0 && d.ServerCert != nil {
			es.add("feature.network.incoming.https_delivery", "set either \"trust_roots\" or \"server_cert\", not both")
		}
	}
	checkTLSPorts(&es, "feature.network.incoming.tls_ports", in, warn)

	// Outgoing.
	out := &f.Network.Outgoing
	if out.Filter != nil {
		checkAddrFilters(&es, "feature.network.outgoing.filter", out.Filter, true)
		if len(out.Filter.Remote) > 0 && !f.Network.DNS.Enabled {
			warn("feature.network.outgoing.filter.remote is set while remote DNS is off: names in the filter are resolved locally")
		}
	}
	checkPatterns(&es, "feature.network.outgoing.unix_streams", out.UnixStreams)

	// DNS.
	dns := &f.Network.DNS
	if dns.Filter != nil {
		switch {
		case !dns.Enabled:
			warn("feature.network.dns.filter is ignored: remote DNS is disabled")
		case dns.Filter.Local != nil && len(dns.Filter.Local) == 0:
			warn("feature.network.dns.filter.local is empty: every name is resolved remotely")
		case dns.Filter.Remote != nil && len(dns.Filter.Remote) == 0:
			warn("feature.network.dns.filter.remote is empty: every name is resolved locally")
		}
		checkAddrFilters(&es, "feature.network.dns.filter", dns.Filter, false)
	}

	for _, name := range sortedKeys(f.SplitQueues) {
		q := f.SplitQueues[name]
		p := Path("feature.split_queues").Key(name)
		if q.QueueType != "SQS" && q.QueueType != "Kafka" {
			es.add(p.Key("queue_type"), "invalid queue type %q; expected \"SQS\" or \"Kafka\"", q.QueueType)
		}
		for _, attr := range sortedKeys(q.MessageFilter) {
			if _, err := regexp2.Compile(q.MessageFilter[attr], regexp2.None); err != nil {
				es.add(p.Key("message_filter").Key(attr), "invalid regex %q: %v", q.MessageFilter[attr], err)
			}
		}
	}
	return es.err()
}

// checkPatterns compiles path-style regexes with Go's regexp, the engine
// the file and unix-socket filters use.
func checkPatterns(es *Errors, p Path, patterns []string) {
	for i, pat := range patterns {
		if _, err := regexp.Compile(pat); err != nil {
			es.add(p.Index(i), "invalid regex %q: %v", pat, err)
		}
	}
}

func checkPortPairs(es *Errors, p Path, pairs []PortPair, warn func(string, ...any)) {
	from, to := map[uint16]bool{}, map[uint16]bool{}
	for i, pair := range pairs {
		if from[pair[0]] || to[pair[1]] {
			es.add(p.Index(i), "port %d or %d is already mapped by an earlier entry; each port may appear once on each side", pair[0], pair[1])
		}
		from[pair[0]], to[pair[1]] = true, true
		if warn != nil && pair[0] == pair[1] {
			warn("%s maps port %d to itself", p.Index(i), pair[0])
		}
	}
}

func checkHTTPFilter(es *Errors, p Path, h *HTTPFilterConfig) {
	n := 0
	for _, set := range []bool{h.HeaderFilter != nil, h.PathFilter != nil, h.AllOf != nil, h.AnyOf != nil} {
		if set {
			n++
		}
	}
	if n > 1 {
		es.add(p, "set only one of header_filter, path_filter, all_of and any_of; combine filters with all_of or any_of")
	}
	if h.HeaderFilter != nil {
		if _, err := httpfilter.Header(*h.HeaderFilter); err != nil {
			es.add(p.Key("header_filter"), "%v", err)
		}
	}
	if h.PathFilter != nil {
		if _, err := httpfilter.Path(*h.PathFilter); err != nil {
			es.add(p.Key("path_filter"), "%v", err)
		}
	}
	if h.MethodFilter != nil {
		if _, err := httpfilter.Method(*h.MethodFilter); err != nil {
			es.add(p.Key("method_filter"), "%v", err)
		}
	}
	for _, list := range []struct {
		key     string
		filters []InnerFilter
	}{{"all_of", h.AllOf}, {"any_of", h.AnyOf}} {
		if list.filters == nil {
			continue
		}
		lp := p.Key(list.key)
		if len(list.filters) == 0 {
			es.add(lp, "the list is empty; give at least one filter")
		}
		for i, f := range list.filters {
			checkInnerFilter(es, lp.Index(i), f)
		}
	}
}

func checkInnerFilter(es *Errors, p Path, f InnerFilter) {
	n := 0
	if f.Header != nil {
		n++
		if _, err := httpfilter.Header(*f.Header); err != nil {
			es.add(p.Key("header"), "%v", err)
		}
	}
	if f.Path != nil {
		n++
		if _, err := httpfilter.Path(*f.Path); err != nil {
			es.add(p.Key("path"), "%v", err)
		}
	}
	if f.Method != nil {
		n++
		if _, err := httpfilter.Method(*f.Method); err != nil {
			es.add(p.Key("method"), "%v", err)
		}
	}
	if n != 1 {
		es.add(p, "each filter needs exactly one of \"header\", \"path\" or \"method\"")
	}
}

func checkAddrFilters(es *Errors, p Path, f *FilterConfig, outgoing bool) {
	check := func(key string, list []string) {
		for i, s := range list {
			if _, err := addrfilter.Parse(s, outgoing); err != nil {
				es.add(p.Key(key).Index(i), "%v", err)
			}
		}
	}
	check("local", f.Local)
	check("remote", f.Remote)
}

func checkSocketAddr(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not an address of the form ip:port", s)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("%q: %q is not an IP address", s, host)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: invalid port %q", s, port)
	}
	return nil
}

// checkTLSPorts checks the TLS ports of a filtered steal: each names a
// port and absolute paths in the target's file system (the agent reads
// them there; their content is checked when the port is stolen).
func checkTLSPorts(es *Errors, p Path, in *IncomingConfig, warn func(string, ...any)) {
	seen := map[uint16]bool{}
	for i, tp := range in.TLSPorts {
		ip := p.Index(i)
		if tp.Port == 0 {
			es.add(ip.Key("port"), "set the target's port that serves TLS (1-65535)")
		} else if seen[tp.Port] {
			es.add(ip.Key("port"), "port %d is listed twice", tp.Port)
		}
		seen[tp.Port] = true
		for _, f := range []struct {
			key  string
			path *string
		}{{"cert_pem", &tp.CertPEM}, {"key_pem", &tp.KeyPEM}, {"client_cert_pem", tp.ClientCertPEM}, {"client_key_pem", tp.ClientKeyPEM}} {
			switch {
			case f.path == nil:
			case *f.path == "" && (f.key == "cert_pem" || f.key == "key_pem"):
				es.add(ip.Key(f.key), "set the path of the PEM file in the target's file system")
			case !strings.HasPrefix(*f.path, "/"):
				es.add(ip.Key(f.key), "%q: give an absolute path in the target's file system", *f.path)
			}
		}
		if (tp.ClientCertPEM == nil) != (tp.ClientKeyPEM == nil) {
			es.add(ip, "set both \"client_cert_pem\" and \"client_key_pem\", or neither")
		}
		if tp.Port != 0 && (in.Mode != IncomingSteal || !in.HTTPFilter.IsSet() || !slices.Contains(in.HTTPFilter.Ports, tp.Port)) {
			warn("%s: port %d is not stolen with an HTTP filter (mode \"steal\", http_filter with the port in http_filter.ports): mirrord does not end its TLS", ip, tp.Port)
		}
	}
}
