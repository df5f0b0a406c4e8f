package kube

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mirrord-go/mirrord/config"
)

func TestAgentJob(t *testing.T) {
	tree, err := config.ParseBytes([]byte(`{"agent": {"ttl": 5, "labels": {"team": "a"}, "disabled_capabilities": ["NET_RAW"],
		"image_pull_secrets": [{"name": "regcred"}, {"secret-key": "ignored"}], "privileged": true}}`), config.JSON, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Decode(tree)
	if err != nil {
		t.Fatal(err)
	}
	target := &Target{Pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "api-1"}, Spec: corev1.PodSpec{NodeName: "node-7"}}, Container: "app", ContainerID: "abc123abc123abc123"}
	job := AgentJob(cfg, target, "staging", "tok")
	spec := job.Spec.Template.Spec
	c := spec.Containers[0]
	switch {
	case job.Namespace != "staging":
		t.Errorf("namespace %q", job.Namespace)
	case !spec.HostPID || spec.NodeName != "node-7":
		t.Errorf("hostPID %v node %q: the agent must run on the target's node with hostPID", spec.HostPID, spec.NodeName)
	case !slices.Contains(c.Args, "--container-id") || !slices.Contains(c.Args, "abc123abc123abc123"):
		t.Errorf("args %v lack the container id", c.Args)
	case !slices.Contains(c.Args, "5s"):
		t.Errorf("args %v lack the ttl", c.Args)
	case slices.Contains(c.SecurityContext.Capabilities.Add, "NET_RAW") || !slices.Contains(c.SecurityContext.Capabilities.Add, "SYS_ADMIN"):
		t.Errorf("capabilities %v", c.SecurityContext.Capabilities.Add)
	case !*c.SecurityContext.Privileged:
		t.Error("privileged not set")
	case job.Labels["team"] != "a" || job.Labels["app"] != "mirrord":
		t.Errorf("labels %v", job.Labels)
	case len(spec.ImagePullSecrets) != 1 || spec.ImagePullSecrets[0].Name != "regcred":
		t.Errorf("pull secrets %v", spec.ImagePullSecrets)
	case *job.Spec.TTLSecondsAfterFinished != 5:
		t.Errorf("job ttl %d", *job.Spec.TTLSecondsAfterFinished)
	case c.Resources.Limits.Memory().String() != "100Mi":
		t.Errorf("limits %v", c.Resources.Limits)
	case len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists:
		t.Errorf("tolerations %v", spec.Tolerations)
	}
	// The token is not in the Job: its env names the Secret.
	tokenEnv := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "MIRRORD_AGENT_TOKEN" })
	if tokenEnv < 0 || c.Env[tokenEnv].Value != "" || c.Env[tokenEnv].ValueFrom == nil ||
		c.Env[tokenEnv].ValueFrom.SecretKeyRef.Name != job.Name {
		t.Errorf("env %v", c.Env)
	}
	if sec := AgentSecret(job, "tok"); string(sec.Data[c.Env[tokenEnv].ValueFrom.SecretKeyRef.Key]) != "tok" || sec.Name != job.Name {
		t.Errorf("secret %+v", sec)
	}
	// Sessions on one target with the same agent settings share an agent:
	// one Job name, whatever the token; another container, namespace or
	// setting gets its own; targetless agents are never shared.
	same := AgentJob(cfg, target, "staging", "other-token")
	other := *target
	other.Container = "worker"
	cfg2 := *cfg
	cfg2.Agent.TTL = 9
	targetless1, targetless2 := AgentJob(cfg, nil, "staging", "tok"), AgentJob(cfg, nil, "staging", "tok")
	switch {
	case same.Name != job.Name:
		t.Errorf("same target and settings: jobs %s and %s", job.Name, same.Name)
	case AgentJob(cfg, &other, "staging", "tok").Name == job.Name:
		t.Error("another container shares the agent")
	case AgentJob(cfg, target, "prod", "tok").Name == job.Name:
		t.Error("another namespace shares the agent")
	case AgentJob(&cfg2, target, "staging", "tok").Name == job.Name:
		t.Error("other agent settings share the agent")
	case targetless1.Name == targetless2.Name:
		t.Error("targetless agents share a name")
	}
	tl := AgentJob(cfg, nil, "default", "tok").Spec.Template.Spec
	if tl.HostPID || tl.NodeName != "" {
		t.Error("a targetless agent needs no hostPID and no node")
	}
	// No API token unless a service account is asked for: the kubelet
	// then has no volume to mount before it starts the pod.
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the agent pod mounts a service account token it does not use")
	}
	sa := "mirrord"
	cfg.Agent.ServiceAccount = &sa
	if s := AgentJob(cfg, target, "staging", "tok").Spec.Template.Spec; s.ServiceAccountName != sa || s.AutomountServiceAccountToken != nil {
		t.Errorf("agent.service_account: account %q, automount %v", s.ServiceAccountName, s.AutomountServiceAccountToken)
	}
}

func TestPickContainer(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "api-1"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "istio-proxy"}, {Name: "app"}}},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{
			{Name: "istio-proxy", ContainerID: "containerd://aaa", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
			{Name: "app", ContainerID: "containerd://bbb", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
		}},
	}
	tg, err := pickContainer(pod, "")
	if err != nil || tg.Container != "app" || tg.ContainerID != "bbb" || tg.Runtime != "containerd" {
		t.Errorf("sidecar not skipped: %+v %v", tg, err)
	}
	if _, err := pickContainer(pod, "nope"); err == nil {
		t.Error("unknown container accepted")
	}
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "worker"})
	if _, err := pickContainer(pod, ""); err == nil {
		t.Error("two app containers should need /container/NAME")
	}
}

func TestHTTPProbePorts(t *testing.T) {
	httpGet := func(port intstr.IntOrString, scheme corev1.URIScheme) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: port, Scheme: scheme}}}
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{
		{
			Name:           "app",
			Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "admin", ContainerPort: 9000}},
			ReadinessProbe: httpGet(intstr.FromString("http"), ""),
			LivenessProbe:  httpGet(intstr.FromInt32(8080), corev1.URISchemeHTTP), // the same port twice
			StartupProbe:   httpGet(intstr.FromString("nope"), ""),                // an unknown name: left out
		},
		{
			Name:           "sidecar",
			ReadinessProbe: httpGet(intstr.FromInt32(15021), ""),
			LivenessProbe:  httpGet(intstr.FromInt32(8443), corev1.URISchemeHTTPS), // not plain HTTP
			StartupProbe:   &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(7000)}}},
		},
	}}}
	got := (&Target{Pod: pod}).HTTPProbePorts()
	if want := []uint16{8080, 15021}; !slices.Equal(got, want) {
		t.Errorf("HTTPProbePorts = %v, want %v", got, want)
	}
}
