package kube

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/mirrord-go/mirrord/config"
)

func decodeConfig(t *testing.T, js string) *config.Config {
	t.Helper()
	tree, err := config.ParseBytes([]byte(js), config.JSON, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Decode(tree)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func ephemeralTarget() *Target {
	user := int64(1000)
	return &Target{
		Pod: &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "api-1", Namespace: "staging", UID: "uid-1"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name:            "app",
				Ports:           []corev1.ContainerPort{{ContainerPort: ephemeralPortBase + 200}},
				SecurityContext: &corev1.SecurityContext{RunAsUser: &user, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
			}}},
		},
		Container: "app", ContainerID: "abc123abc123abc123",
	}
}

// TestEphemeralAgentContainer: the agent shares the target container's
// PID namespace, finds it by container ID, listens on the pod's loopback
// on the given port, takes its token from the Secret, and runs as root
// with NET_ADMIN and SYS_PTRACE only — or, with both disabled, with the
// target container's own security context.
func TestEphemeralAgentContainer(t *testing.T) {
	target := ephemeralTarget()
	ec := EphemeralAgentContainer(decodeConfig(t, `{"agent": {"ttl": 5}}`), target, "mirrord-agent-x", 44321)
	sc := ec.SecurityContext
	switch {
	case ec.TargetContainerName != "app":
		t.Errorf("targetContainerName %q", ec.TargetContainerName)
	case ec.Name != "mirrord-agent-x":
		t.Errorf("name %q", ec.Name)
	case !slices.Contains(ec.Args, "127.0.0.1:44321") || !slices.Contains(ec.Args, "abc123abc123abc123") || !slices.Contains(ec.Args, "5s"):
		t.Errorf("args %v", ec.Args)
	case listenPort(ec.Args) != 44321:
		t.Errorf("listenPort(%v) = %d", ec.Args, listenPort(ec.Args))
	case sc == nil || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN", "SYS_PTRACE"}):
		t.Errorf("security context %+v", sc)
	case *sc.RunAsUser != 0 || *sc.RunAsNonRoot || *sc.Privileged:
		t.Errorf("the agent with capabilities must run as root, unprivileged: %+v", sc)
	case len(ec.Resources.Limits) != 0 || len(ec.Resources.Requests) != 0:
		t.Error("ephemeral containers may not set resources")
	}
	var tokenRef *corev1.SecretKeySelector
	for _, e := range ec.Env {
		if e.Name == "MIRRORD_AGENT_TOKEN" && e.ValueFrom != nil {
			tokenRef = e.ValueFrom.SecretKeyRef
		}
	}
	if tokenRef == nil || tokenRef.Name != "mirrord-agent-x" || tokenRef.Key != secretTokenKey {
		t.Errorf("token env %+v", ec.Env)
	}

	ec = EphemeralAgentContainer(decodeConfig(t, `{"agent": {"disabled_capabilities": ["NET_ADMIN", "SYS_PTRACE"]}}`), target, "mirrord-agent-y", 44322)
	if sc := ec.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 1000 || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("without capabilities the agent must take the target container's security context: %+v", sc)
	}
	if sc := target.Pod.Spec.Containers[0].SecurityContext; len(sc.Capabilities.Add) != 0 {
		t.Error("the target's own spec was changed")
	}
}

func TestEphemeralPort(t *testing.T) {
	pod := ephemeralTarget().Pod
	for range 100 {
		pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Args: []string{"agent", "--listen", "127.0.0.1:" + strconv.Itoa(ephemeralPortBase+len(pod.Spec.EphemeralContainers))}},
		})
	}
	for range 1000 {
		p := ephemeralPort(pod)
		if p < ephemeralPortBase+100 || p >= ephemeralPortBase+ephemeralPortSpan || p == ephemeralPortBase+200 {
			t.Fatalf("port %d is used or out of range", p)
		}
	}
}

// TestEphemeralPortRange: the agent's port stays out of the pod's own
// ephemeral port range (from which the port-forward's connects take their
// source ports, one of which could otherwise be the agent's and connect
// to itself), where the pod widened it.
func TestEphemeralPortRange(t *testing.T) {
	for _, tt := range []struct {
		name       string
		sysctls    []corev1.Sysctl
		base, span int
	}{
		{"no sysctls", nil, ephemeralPortBase, ephemeralPortSpan},
		{"another sysctl", []corev1.Sysctl{{Name: "net.ipv4.tcp_keepalive_time", Value: "60"}}, ephemeralPortBase, ephemeralPortSpan},
		{"a range above ours", []corev1.Sysctl{{Name: "net.ipv4.ip_local_port_range", Value: "40000 60999"}}, ephemeralPortBase, ephemeralPortSpan},
		{"a range that covers ours", []corev1.Sysctl{{Name: "net.ipv4.ip_local_port_range", Value: "10000 65535"}}, 1024, ephemeralPortSpan},
		{"little room below", []corev1.Sysctl{{Name: "net/ipv4/ip_local_port_range", Value: "2000 65535"}}, 1024, 976},
		{"no room below", []corev1.Sysctl{{Name: "net.ipv4.ip_local_port_range", Value: "1024 65535"}}, ephemeralPortBase, ephemeralPortSpan},
		{"unreadable", []corev1.Sysctl{{Name: "net.ipv4.ip_local_port_range", Value: "low high"}}, ephemeralPortBase, ephemeralPortSpan},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pod := ephemeralTarget().Pod
			pod.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: tt.sysctls}
			if base, span := ephemeralPortRange(pod); base != tt.base || span != tt.span {
				t.Errorf("range [%d, +%d), want [%d, +%d)", base, span, tt.base, tt.span)
			}
			for range 200 {
				if p := ephemeralPort(pod); p < tt.base || p >= tt.base+tt.span {
					t.Fatalf("port %d outside [%d, +%d)", p, tt.base, tt.span)
				}
			}
		})
	}
}

// TestEphemeralRefused: the API server's refusals become errors that say
// what is missing and the way out.
func TestEphemeralRefused(t *testing.T) {
	cfg := decodeConfig(t, `{}`)
	target := ephemeralTarget()
	gr := schema.GroupResource{Resource: "pods"}
	for _, tt := range []struct {
		name string
		err  error
		want []string
		gone bool
	}{
		{"rbac", apierrors.NewForbidden(gr, "api-1", errors.New(`User "u" cannot update resource "pods/ephemeralcontainers" in API group "" in the namespace "staging"`)),
			[]string{"pods/ephemeralcontainers", "update", `namespace "staging"`, "agent.ephemeral"}, false},
		{"psa", apierrors.NewForbidden(gr, "api-1", errors.New(`violates PodSecurity "baseline:latest": non-default capabilities (container "mirrord-agent-x" must not include "NET_ADMIN", "SYS_PTRACE" in securityContext.capabilities.add)`)),
			[]string{"Pod Security", "pod-security.kubernetes.io/enforce", "agent.disabled_capabilities", `"NET_ADMIN", "SYS_PTRACE"`, "agent.namespace", "NET_ADMIN"}, false},
		{"no api", apierrors.NewNotFound(schema.GroupResource{}, ""), []string{"does not serve pods/ephemeralcontainers"}, false},
		{"pod gone", apierrors.NewNotFound(gr, "api-1"), []string{"api-1 is gone"}, true},
	} {
		err := ephemeralRefused(cfg, target, tt.err)
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error lacks %q: %v", tt.name, w, err)
			}
		}
		if errors.As(err, new(goneError)) != tt.gone {
			t.Errorf("%s: gone = %v: %v", tt.name, !tt.gone, err)
		}
	}
}

// TestAddEphemeral: the container is added through the ephemeralcontainers
// subresource, next to those already there, on the pod the target was
// resolved to; a replaced pod of the same name is not used.
func TestAddEphemeral(t *testing.T) {
	target := ephemeralTarget()
	pod := target.Pod.DeepCopy()
	pod.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Args: []string{"--listen", "127.0.0.1:44300"}}}}
	cs := fake.NewClientset(pod)
	c := &Client{Clientset: cs}
	port, err := c.addEphemeral(context.Background(), decodeConfig(t, `{}`), target, "mirrord-agent-z")
	if err != nil {
		t.Fatal(err)
	}
	got, err := cs.CoreV1().Pods("staging").Get(context.Background(), "api-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ec := range got.Spec.EphemeralContainers {
		names = append(names, ec.Name)
	}
	if !slices.Equal(names, []string{"debugger", "mirrord-agent-z"}) || port == 44300 || listenPort(got.Spec.EphemeralContainers[1].Args) != port {
		t.Errorf("ephemeral containers %v, port %d", names, port)
	}
	var sub bool
	for _, a := range cs.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "ephemeralcontainers" {
			sub = true
		}
	}
	if !sub {
		t.Errorf("no update of pods/ephemeralcontainers in %v", cs.Actions())
	}

	replaced := target.Pod.DeepCopy()
	replaced.UID = "uid-2"
	c = &Client{Clientset: fake.NewClientset(replaced)}
	if _, err := c.addEphemeral(context.Background(), decodeConfig(t, `{}`), target, "mirrord-agent-z"); !errors.As(err, new(goneError)) {
		t.Errorf("a replaced pod: %v", err)
	}
}
