package config

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"strings"

	"github.com/mirrord-go/mirrord/version"
)

// Target is the workload the local process runs in the context of.
type Target struct {
	// Path is nil when no target is given: mirrord then runs targetless
	// (or, in an interactive front end, asks for one).
	Path      *TargetPath `json:"path" env:"MIRRORD_IMPERSONATED_TARGET"`
	Namespace *string     `json:"namespace" env:"MIRRORD_TARGET_NAMESPACE"`
}

// Targetless reports whether the session has no target pod: outgoing
// traffic, DNS and files then come from a fresh agent pod in the cluster.
func (t Target) Targetless() bool { return t.Path == nil || t.Path.Kind == "targetless" }

func (t *Target) decodeConfig(d *decoder, p Path, v any) {
	switch v := v.(type) {
	case string:
		var tp TargetPath
		if tp.parse(d, p, v) {
			t.Path = &tp
		}
	case map[string]any:
		for k := range v {
			if _, ok := targetKeys[k]; ok {
				// {"pod": "x", "container": "c"}: a target object
				// without the {path, namespace} wrapper.
				var tp TargetPath
				tp.decodeConfig(d, p, v)
				t.Path = &tp
				return
			}
		}
		d.decodeStruct(p, v, reflect.ValueOf(t).Elem())
	default:
		d.errs.add(p, "expected a target path such as \"pod/my-pod\" or an object {\"path\": ..., \"namespace\": ...}, got %s", describe(v))
	}
}

func (Target) jsonSchemaAlternatives() []map[string]any {
	return []map[string]any{{"type": "string"}}
}

// TargetPath names one target: a kind, a name and optionally a container.
type TargetPath struct {
	Kind      string // pod, deployment, rollout, job, cronjob, statefulset, service, replicaset or targetless
	Name      string
	Container string
}

// targetKinds maps every accepted spelling to the canonical kind.
var targetKinds = map[string]string{
	"pod": "pod", "pods": "pod",
	"deployment": "deployment", "deploy": "deployment", "deployments": "deployment",
	"rollout": "rollout", "rollouts": "rollout",
	"job": "job", "jobs": "job",
	"cronjob": "cronjob", "cronjobs": "cronjob",
	"statefulset": "statefulset", "statefulsets": "statefulset", "sts": "statefulset",
	"service": "service", "services": "service", "svc": "service",
	"replicaset": "replicaset", "replicasets": "replicaset", "rs": "replicaset",
	// pid/<PID>: a process on this machine, for local testing; mirrord
	// starts the agent itself.
	"pid": "pid",
}

// targetKeys are the keys of the object form of a target path.
var targetKeys = map[string]string{
	"pod": "pod", "deployment": "deployment", "rollout": "rollout", "job": "job",
	"cron_job": "cronjob", "stateful_set": "statefulset", "service": "service", "replica_set": "replicaset",
}

const targetForms = "\"targetless\" or <kind>/<name>[/container/<container>] with kind one of pod, deployment (deploy), rollout, job, cronjob, statefulset, service, replicaset"

// ParseTargetPath parses a target string such as "deploy/api/container/app".
func ParseTargetPath(s string) (TargetPath, error) {
	var d decoder
	var tp TargetPath
	if !tp.parse(&d, "", s) {
		return tp, fmt.Errorf("%s", d.errs[0].Msg)
	}
	return tp, nil
}

func (tp *TargetPath) parse(d *decoder, p Path, s string) bool {
	if s == "targetless" {
		*tp = TargetPath{Kind: "targetless"}
		return true
	}
	parts := strings.Split(s, "/")
	if len(parts) < 2 {
		d.errs.add(p, "invalid target %q: expected %s", s, targetForms)
		return false
	}
	kind, ok := targetKinds[strings.ToLower(parts[0])]
	if !ok {
		d.errs.add(p, "invalid target %q: unknown kind %q%s; expected %s", s, parts[0], didYouMean(parts[0], sortedKeys(targetKinds)), targetForms)
		return false
	}
	t := TargetPath{Kind: kind, Name: parts[1]}
	switch {
	case len(parts) == 2:
	case len(parts) == 3:
		// "deployment/app/main": the container, without the
		// "container" keyword. Upstream rejects this form, but its own
		// documentation uses it.
		t.Container = parts[2]
	case len(parts) == 4 && parts[2] == "container":
		t.Container = parts[3]
	default:
		d.errs.add(p, "invalid target %q: expected %s", s, targetForms)
		return false
	}
	if t.Name == "" || (len(parts) > 2 && t.Container == "") {
		d.errs.add(p, "invalid target %q: empty name; expected %s", s, targetForms)
		return false
	}
	if kind == "pid" {
		if n, err := strconv.Atoi(t.Name); err != nil || n <= 0 || len(parts) > 2 {
			d.errs.add(p, "invalid target %q: expected pid/<process id>, such as pid/4242", s)
			return false
		}
	}
	*tp = t
	return true
}

func (tp *TargetPath) decodeConfig(d *decoder, p Path, v any) {
	switch v := v.(type) {
	case string:
		tp.parse(d, p, v)
	case map[string]any:
		var t TargetPath
		for _, k := range sortedKeys(v) {
			val := v[k]
			if k == "container" {
				d.decode(p.Key(k), val, reflect.ValueOf(&t.Container).Elem())
				continue
			}
			kind, ok := targetKeys[k]
			if !ok {
				d.errs.add(p.Key(k), "unknown key%s; a target object has one of %s, and optionally container", didYouMean(k, sortedKeys(targetKeys)), strings.Join(sortedKeys(targetKeys), ", "))
				return
			}
			if t.Kind != "" {
				d.errs.add(p.Key(k), "a target object names one workload, but both %q and %q are set", t.Kind, kind)
				return
			}
			t.Kind = kind
			d.decode(p.Key(k), val, reflect.ValueOf(&t.Name).Elem())
		}
		if t.Kind == "" {
			d.errs.add(p, "a target object needs one of %s", strings.Join(sortedKeys(targetKeys), ", "))
			return
		}
		if t.Name == "" {
			d.errs.add(p, "the target name is empty")
			return
		}
		*tp = t
	default:
		d.errs.add(p, "expected a target path such as \"pod/my-pod\", got %s", describe(v))
	}
}

func (tp TargetPath) String() string {
	if tp.Kind == "targetless" {
		return "targetless"
	}
	s := tp.Kind + "/" + tp.Name
	if tp.Container != "" {
		s += "/container/" + tp.Container
	}
	return s
}

func (tp TargetPath) MarshalJSON() ([]byte, error) { return json.Marshal(tp.String()) }

func (TargetPath) jsonSchema() map[string]any {
	return map[string]any{"anyOf": []any{
		map[string]any{"type": "string", "description": targetForms},
		map[string]any{"type": "object"},
	}}
}

// DefaultAgentImage is the agent image of this build.
func DefaultAgentImage() string {
	return DefaultAgentRegistry + ":" + version.Version
}

// DefaultAgentRegistry is where this build's agent image is published.
const DefaultAgentRegistry = "ghcr.io/mirrord-go/mirrord"

// AgentImage is the agent's container image reference. The config may
// write it as a string or as {"registry": ..., "tag": ...}.
type AgentImage string

func (a *AgentImage) decodeConfig(d *decoder, p Path, v any) {
	switch v := v.(type) {
	case string:
		if strings.TrimSpace(v) == "" {
			d.errs.add(p, "the image reference is empty")
			return
		}
		*a = AgentImage(v)
	case map[string]any:
		var parts struct {
			Registry *string `json:"registry"`
			Tag      *string `json:"tag"`
		}
		d.decodeStruct(p, v, reflect.ValueOf(&parts).Elem())
		reg, tag := DefaultAgentRegistry, version.Version
		if parts.Registry != nil {
			reg = *parts.Registry
		}
		if parts.Tag != nil {
			tag = *parts.Tag
		}
		*a = AgentImage(reg + ":" + tag)
	default:
		d.errs.add(p, "expected an image reference string or {\"registry\": ..., \"tag\": ...}, got %s", describe(v))
	}
}

func (AgentImage) jsonSchema() map[string]any {
	return map[string]any{"anyOf": []any{
		map[string]any{"type": "string"},
		map[string]any{"type": "object", "additionalProperties": false, "properties": map[string]any{
			"registry": map[string]any{"type": "string"}, "tag": map[string]any{"type": "string"},
		}},
	}}
}

// IPAddress is an IPv4 or IPv6 address.
type IPAddress string

func (a *IPAddress) decodeConfig(d *decoder, p Path, v any) {
	s, ok := v.(string)
	if !ok {
		d.errs.add(p, "expected an IP address string, got %s", describe(v))
		return
	}
	if _, err := netip.ParseAddr(s); err != nil {
		d.errs.add(p, "%q is not an IP address", s)
		return
	}
	*a = IPAddress(s)
}

func (IPAddress) jsonSchema() map[string]any { return map[string]any{"type": "string"} }

func jsonNumber(s string) any { return json.Number(strings.TrimSpace(s)) }
