package kube

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/mirrord-go/mirrord/config"
)

// ephemeralCapabilities are what an agent in the target's pod needs:
// NET_ADMIN for the nftables redirects of incoming traffic, SYS_PTRACE to
// read the target's /proc/<pid>/environ and /proc/<pid>/root when its
// process runs as another user or holds capabilities the agent lacks. It
// is in the pod's network and UTS namespaces already, so it never calls
// setns (no SYS_ADMIN), and it sets no raw sockets (no NET_RAW).
var ephemeralCapabilities = []string{"NET_ADMIN", "SYS_PTRACE"}

// Ephemeral agents listen on a port of the target pod's loopback in
// [ephemeralPortBase, ephemeralPortBase+ephemeralPortSpan): each session
// has its own agent in the pod, so the port cannot be fixed. The range is
// below the kernel's default ephemeral ports, for the reason given at
// AgentPort: no connect() in the pod, the port-forwards' included, picks
// one of them as its source port.
const (
	ephemeralPortBase = 24128
	ephemeralPortSpan = 2000
)

// EphemeralAgentContainer is the ephemeral container that runs the agent
// in the target's pod, listening on port of the pod's loopback. It names
// the target container (targetContainerName), so that it shares that
// container's PID namespace: the agent finds the target's process in its
// own /proc, without hostPID. Its token comes from the Secret of the same
// name (EphemeralAgentSecret).
//
// With capabilities (the default) it runs as root with
// ephemeralCapabilities (minus agent.disabled_capabilities). With all of
// them disabled (and agent.privileged off) it runs with the target
// container's own security context (its user, its capabilities): the
// agent can then read the target's environment and files as the target
// itself can, and the container passes the same Pod Security level as the
// target — but incoming traffic, which needs NET_ADMIN, is not available.
func EphemeralAgentContainer(cfg *config.Config, target *Target, name string, port int) corev1.EphemeralContainer {
	a := cfg.Agent
	args := []string{"agent", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--ttl", fmt.Sprintf("%ds", max(a.TTL, 1)),
		"--first-client-timeout", "60s", "--container-id", target.ContainerID}
	var env []corev1.EnvVar
	if lvl := agentLogLevel(a.LogLevel); lvl != "" {
		env = append(env, corev1.EnvVar{Name: "MIRRORD_LOG_LEVEL", Value: lvl})
	}
	env = append(env, corev1.EnvVar{Name: "MIRRORD_AGENT_TOKEN", ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: secretTokenKey},
	}})
	return corev1.EphemeralContainer{
		TargetContainerName: target.Container,
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name:            name,
			Image:           string(a.Image),
			ImagePullPolicy: corev1.PullPolicy(a.ImagePullPolicy),
			Command:         []string{"/mirrord"},
			Args:            args,
			Env:             env,
			SecurityContext: ephemeralSecurityContext(cfg, target),
			// Ephemeral containers may not set resources, ports or
			// probes (the API refuses them), so agent.resources does
			// not apply.
		},
	}
}

// ephemeralCaps are the capabilities the ephemeral agent adds.
func ephemeralCaps(a config.AgentConfig) []corev1.Capability {
	var caps []corev1.Capability
	for _, c := range ephemeralCapabilities {
		if !slices.Contains(a.DisabledCapabilities, config.Capability(c)) {
			caps = append(caps, corev1.Capability(c))
		}
	}
	return caps
}

func ephemeralSecurityContext(cfg *config.Config, target *Target) *corev1.SecurityContext {
	caps := ephemeralCaps(cfg.Agent)
	if len(caps) == 0 && !cfg.Agent.Privileged {
		for _, c := range target.Pod.Spec.Containers {
			if c.Name == target.Container && c.SecurityContext != nil {
				return c.SecurityContext.DeepCopy()
			}
		}
		return nil // the pod's security context applies
	}
	privileged := cfg.Agent.Privileged
	return &corev1.SecurityContext{
		Privileged:   &privileged,
		Capabilities: &corev1.Capabilities{Add: caps},
		// Root, whatever the pod's securityContext says: capabilities
		// added to a non-root user's container are not effective.
		RunAsUser:    ptr(int64(0)),
		RunAsGroup:   ptr(int64(0)),
		RunAsNonRoot: ptr(false),
	}
}

// EphemeralAgentSecret holds an ephemeral agent's session token, in the
// target's namespace (an ephemeral container can only read its own pod's
// namespace's Secrets). It is owned by the target pod, so that the
// garbage collector removes it with the pod even when mirrord is killed
// while the agent starts; otherwise it is deleted as soon as the agent
// runs (the kubelet has read it then, and an ephemeral container is never
// restarted).
func EphemeralAgentSecret(target *Target, name, token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: target.Pod.Namespace,
			Labels: map[string]string{"app": "mirrord", "mirrord.dev/agent": name},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Pod", Name: target.Pod.Name, UID: target.Pod.UID,
			}},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{secretTokenKey: []byte(token)},
	}
}

// ephemeralPort picks the port of a new ephemeral agent: random in its
// range, and neither a port the target's containers declare nor one an
// earlier agent in the pod was given (it may still run).
func ephemeralPort(pod *corev1.Pod) int {
	used := map[int]bool{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			used[int(p.ContainerPort)] = true
		}
	}
	for _, ec := range pod.Spec.EphemeralContainers {
		if p := listenPort(ec.Args); p != 0 {
			used[p] = true
		}
	}
	base, span := ephemeralPortRange(pod)
	for {
		if p := base + rand.IntN(span); !used[p] {
			return p
		}
	}
}

// ephemeralPortRange is where ephemeralPort picks from: [base, base+span),
// normally [ephemeralPortBase, ephemeralPortBase+ephemeralPortSpan). A
// pod may widen its own ephemeral port range (the namespaced sysctl
// net.ipv4.ip_local_port_range, "1024 65535" on busy services), from which
// its connects, the port-forward's included, take their source ports; the
// range then moves below the pod's, where there is room for it.
func ephemeralPortRange(pod *corev1.Pod) (base, span int) {
	base, span = ephemeralPortBase, ephemeralPortSpan
	if pod.Spec.SecurityContext == nil {
		return base, span
	}
	for _, sc := range pod.Spec.SecurityContext.Sysctls {
		if sc.Name != "net.ipv4.ip_local_port_range" && sc.Name != "net/ipv4/ip_local_port_range" {
			continue
		}
		var lo, hi int
		if n, _ := fmt.Sscanf(sc.Value, "%d %d", &lo, &hi); n != 2 || hi < base || lo >= base+span {
			return base, span // unreadable, or no overlap
		}
		const lowest = 1024 // below it: privileged ports, which apps listen on
		if room := lo - lowest; room >= 100 {
			return lowest, min(room, ephemeralPortSpan)
		}
	}
	return base, span
}

// listenPort is the port of an agent's --listen argument (0: none).
func listenPort(args []string) int {
	for i, a := range args {
		if a == "--listen" && i+1 < len(args) {
			var port int
			if _, err := fmt.Sscanf(args[i+1][strings.LastIndexByte(args[i+1], ':')+1:], "%d", &port); err == nil {
				return port
			}
		}
	}
	return 0
}

// StartEphemeralAgent adds the agent to the target's pod as an ephemeral
// container and returns once it answers through a port-forward to the pod
// (the connection is kept, as StartAgent's). Each session has its own
// ephemeral agent: its token is not kept in the cluster once it runs, so
// no other session can join it.
//
// Kubernetes cannot remove an ephemeral container: when the session ends
// the agent exits (agent.ttl after its last connection), and the exited
// container stays in the pod's spec and status until the pod is deleted.
func (c *Client) StartEphemeralAgent(ctx context.Context, cfg *config.Config, target *Target, steps *Steps) (*Agent, error) {
	ns, podName := target.Pod.Namespace, target.Pod.Name
	name := "mirrord-agent-" + randomHex(5)
	token := randomHex(16)
	secrets := c.Clientset.CoreV1().Secrets(ns)
	if _, err := secrets.Create(ctx, EphemeralAgentSecret(target, name, token), metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create the agent's token Secret in namespace %q (mirrord needs create and delete on secrets there): %w", ns, err)
	}
	a := &Agent{Namespace: ns, PodName: podName, Token: token, Ephemeral: true, Container: name, client: c}
	port, err := c.addEphemeral(ctx, cfg, target, name)
	if err != nil {
		a.Delete(context.Background())
		return nil, err
	}
	a.Port = port
	steps.Done("agent ephemeral container added", "pod", podName, "container", name, "port", port)
	timeout := time.Duration(cfg.Agent.StartupTimeout) * time.Second
	if err := a.waitEphemeral(ctx, timeout, steps); err != nil {
		a.Delete(context.Background())
		return nil, err
	}
	// The kubelet has read the token: the Secret is not needed any more.
	a.Delete(context.Background())
	return a, nil
}

// addEphemeral adds the agent's ephemeral container to the target's pod
// and returns its port.
func (c *Client) addEphemeral(ctx context.Context, cfg *config.Config, target *Target, name string) (int, error) {
	pods := c.Clientset.CoreV1().Pods(target.Pod.Namespace)
	for {
		pod, err := pods.Get(ctx, target.Pod.Name, metav1.GetOptions{})
		if err != nil {
			return 0, fmt.Errorf("read the target pod %s/%s: %w", target.Pod.Namespace, target.Pod.Name, err)
		}
		if pod.UID != target.Pod.UID {
			return 0, goneError{fmt.Sprintf("the target pod %s/%s was replaced", pod.Namespace, pod.Name)}
		}
		port := ephemeralPort(pod)
		pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, EphemeralAgentContainer(cfg, target, name, port))
		_, err = pods.UpdateEphemeralContainers(ctx, pod.Name, pod, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue // the pod changed since we read it
		}
		if err != nil {
			return 0, ephemeralRefused(cfg, target, err)
		}
		return port, nil
	}
}

// ephemeralRefused explains why the API server refused the agent's
// ephemeral container.
func ephemeralRefused(cfg *config.Config, target *Target, err error) error {
	ns, pod := target.Pod.Namespace, target.Pod.Name
	msg := err.Error()
	switch {
	case strings.Contains(msg, "violates PodSecurity"):
		var names []string
		for _, c := range ephemeralCaps(cfg.Agent) {
			names = append(names, string(c))
		}
		return fmt.Errorf("namespace %q's Pod Security admission (label %s) forbids the agent's ephemeral container in pod %s, which runs as root with capabilities %s; "+
			"without incoming traffic (mirror/steal need NET_ADMIN), set agent.disabled_capabilities to [%s]: the agent then runs as the target container's user with its capabilities, which the namespace allows for the target; "+
			"or run the agent as a Job (without agent.ephemeral/-e) with agent.namespace (--agent-namespace) naming a namespace labelled %s=privileged. The admission said: %w",
			ns, psaEnforceLabel, pod, strings.Join(names, ", "), quotedCaps(ephemeralCapabilities), psaEnforceLabel, err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("agent.ephemeral: adding the agent to pod %s/%s as an ephemeral container needs `update` on pods/ephemeralcontainers in namespace %q, which this user lacks; "+
			"ask for it, or run the agent as a Job (without agent.ephemeral/-e): %w", ns, pod, ns, err)
	case apierrors.IsNotFound(err) && !strings.Contains(msg, pod):
		return fmt.Errorf("agent.ephemeral: the cluster does not serve pods/ephemeralcontainers (Kubernetes 1.25 and later do); run the agent as a Job (without agent.ephemeral/-e): %w", err)
	case apierrors.IsNotFound(err):
		return goneError{fmt.Sprintf("the target pod %s/%s is gone", ns, pod)}
	}
	return fmt.Errorf("agent.ephemeral: add the agent to pod %s/%s as an ephemeral container: %w", ns, pod, err)
}

// ephemeralStatus is the agent container's status in pod, if it has one.
func (a *Agent) ephemeralStatus(pod *corev1.Pod) *corev1.ContainerStatus {
	for i, cs := range pod.Status.EphemeralContainerStatuses {
		if cs.Name == a.Container {
			return &pod.Status.EphemeralContainerStatuses[i]
		}
	}
	return nil
}

// waitEphemeral is waitReady for an ephemeral agent: it watches the target
// pod for the agent container's status, to fail fast when it cannot run,
// and meanwhile tries to reach the agent through a port-forward to the
// pod (whose network namespace exists already: only SPDY is tried until
// the kubelet reports the container running, as in waitReady).
func (a *Agent) waitEphemeral(ctx context.Context, timeout time.Duration, steps *Steps) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log := steps.Logger()
	where := fmt.Sprintf("container %s of pod %s/%s", a.Container, a.Namespace, a.PodName)
	pod := fmt.Sprintf("the target pod %s/%s", a.Namespace, a.PodName)
	a.dialer = newPodDialer(a, log)
	running := false
	err := a.await(ctx, &agentWait{
		pods:     a.client.Clientset.CoreV1().Pods(a.Namespace),
		opts:     metav1.ListOptions{FieldSelector: "metadata.name=" + a.PodName},
		watching: pod,
		reaching: fmt.Sprintf("the agent in pod %s/%s", a.Namespace, a.PodName),
		timedOut: func() error {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("the agent (ephemeral %s) did not start within %s (agent.startup_timeout)", where, timeout)
			}
			return ctx.Err()
		},
		log: log,
		pod: func(ev watch.EventType, p *corev1.Pod) (bool, bool, error) {
			if ev == watch.Deleted || p.DeletionTimestamp != nil {
				return false, false, goneError{pod + " went away before the agent started"}
			}
			if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
				return false, false, goneError{fmt.Sprintf("%s has ended (%s): its ephemeral agent cannot run", pod, p.Status.Phase)}
			}
			cs := a.ephemeralStatus(p)
			if cs == nil {
				return true, running, nil
			}
			if wt := cs.State.Waiting; wt != nil {
				if cannotPull(wt.Reason) {
					return false, false, fmt.Errorf("the agent image %s cannot be pulled on the target's node (%s: %s); set agent.image", cs.Image, wt.Reason, wt.Message)
				}
				if wt.Reason == "CreateContainerConfigError" && strings.Contains(wt.Message, "failed to sync secret cache") {
					// The kubelet has not seen the token's Secret yet (a
					// busy node): it retries, within agent.startup_timeout.
					log.Debug("the kubelet waits for the agent's token Secret", "message", wt.Message)
				} else if strings.HasSuffix(wt.Reason, "Error") { // CreateContainerConfigError, RunContainerError, ...
					return false, false, fmt.Errorf("the agent (ephemeral %s) cannot start: %s: %s", where, wt.Reason, wt.Message)
				}
			}
			if tm := cs.State.Terminated; tm != nil {
				return false, false, goneError{fmt.Sprintf("the agent (ephemeral %s) exited (%s, code %d): %s", where, tm.Reason, tm.ExitCode, a.podLogs(a.PodName))}
			}
			if cs.State.Running != nil && !running {
				running = true
				steps.Done("agent container running", "pod", a.PodName, "container", a.Container)
			}
			return true, running, nil
		},
	})
	if err != nil {
		return err
	}
	steps.Done("agent listening", "pod", a.PodName, "container", a.Container)
	return nil
}

// ephemeralRunning is Running for an ephemeral agent: its container runs
// in a pod that is not going away.
func (a *Agent) ephemeralRunning(ctx context.Context) (bool, error) {
	pod, err := a.client.Clientset.CoreV1().Pods(a.Namespace).Get(ctx, a.PodName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if pod.DeletionTimestamp != nil {
		return false, nil
	}
	cs := a.ephemeralStatus(pod)
	return cs != nil && cs.State.Terminated == nil, nil
}

// quotedCaps lists capabilities as a JSON array's items.
func quotedCaps(caps []string) string {
	q := make([]string, len(caps))
	for i, c := range caps {
		q[i] = `"` + c + `"`
	}
	return strings.Join(q, ", ")
}
