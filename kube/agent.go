package kube

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/mirrord-go/mirrord/config"
)

// AgentPort is the port the agent listens on inside its pod. The pod has
// its own network namespace, so a fixed port cannot clash with another
// listener. It lies below Linux's default ephemeral port range
// (net.ipv4.ip_local_port_range, 32768-60999), from which connect() picks
// source ports: the CLI's port-forwards dial the pod's loopback while the
// agent starts, and one such dial whose source port was the agent's own
// (44128 once was) connects to itself (TCP simultaneous open), holding
// the port, so that the agent's listen fails with "address already in
// use".
const AgentPort = 24128

// Agent is a running agent pod.
type Agent struct {
	Namespace string
	JobName   string
	PodName   string
	Token     string
	// Shared: a targeted agent, which other sessions on the target may
	// use too (see AgentJob); it goes away by itself one TTL after its
	// last session, rather than being deleted when this one ends.
	Shared bool
	// Joined: this session uses an agent another session started.
	Joined bool
	// Ephemeral: the agent is the ephemeral container Container of the
	// target's pod PodName (StartEphemeralAgent), listening on Port;
	// there is no Job.
	Ephemeral bool
	Container string
	Port      int // 0: AgentPort
	client    *Client
	dialer    *podDialer // set once the pod is known
	// secretUnowned: the token Secret could not be given to the Job.
	secretUnowned bool
	jobUID        types.UID // the Job's, when known: its events are this Job's
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// defaultCapabilities are what the agent needs: entering namespaces and
// (for incoming traffic) setting nftables rules.
var defaultCapabilities = []string{"NET_ADMIN", "NET_RAW", "SYS_PTRACE", "SYS_ADMIN"}

// AgentJob builds the Job that runs the agent for target (nil: targetless).
func AgentJob(cfg *config.Config, target *Target, namespace, token string) *batchv1.Job {
	a := cfg.Agent
	// Loopback only: the port-forward reaches the pod's loopback, and no
	// other pod of the cluster can reach a privileged agent next to the
	// target.
	args := []string{"agent", "--listen", fmt.Sprintf("127.0.0.1:%d", AgentPort), "--ttl", fmt.Sprintf("%ds", max(a.TTL, 1)),
		// A session that never connects (its CLI was killed) does not
		// leave the agent running.
		"--first-client-timeout", "60s"}
	if target != nil {
		args = append(args, "--container-id", target.ContainerID)
		if target.Duty != nil {
			args = append(args, target.Duty.AgentArgs()...)
		}
	}
	caps := []corev1.Capability{}
	for _, c := range defaultCapabilities {
		if !slices.Contains(a.DisabledCapabilities, config.Capability(c)) {
			caps = append(caps, corev1.Capability(c))
		}
	}
	privileged := a.Privileged
	var env []corev1.EnvVar
	if lvl := agentLogLevel(a.LogLevel); lvl != "" {
		env = append(env, corev1.EnvVar{Name: "MIRRORD_LOG_LEVEL", Value: lvl})
	}
	container := corev1.Container{
		Name:            "mirrord-agent",
		Image:           string(a.Image),
		ImagePullPolicy: corev1.PullPolicy(a.ImagePullPolicy),
		Command:         []string{"/mirrord"},
		Args:            args,
		Env:             env,
		SecurityContext: &corev1.SecurityContext{
			Privileged:   &privileged,
			Capabilities: &corev1.Capabilities{Add: caps},
		},
		Resources: resources(a.Resources),
	}
	spec := corev1.PodSpec{
		RestartPolicy:                 corev1.RestartPolicyNever,
		Containers:                    []corev1.Container{container},
		Tolerations:                   tolerations(a.Tolerations),
		TerminationGracePeriodSeconds: ptr(int64(0)),
	}
	if target != nil {
		spec.HostPID = true
		spec.NodeName = target.Pod.Spec.NodeName
	} else {
		spec.NodeSelector = a.NodeSelector
	}
	if a.ServiceAccount != nil {
		spec.ServiceAccountName = *a.ServiceAccount
	} else if target != nil && target.Duty != nil {
		// The agent talks to the API server for its duty.
		spec.ServiceAccountName = target.Duty.ServiceAccount
		spec.AutomountServiceAccountToken = ptr(true)
	} else {
		// The agent does not talk to the API server. Without the
		// token volume the kubelet has nothing to mount before it
		// creates the pod's sandbox, which starts it sooner.
		spec.AutomountServiceAccountToken = ptr(false)
	}
	spec.ImagePullSecrets = append(spec.ImagePullSecrets, pullSecrets(a.ImagePullSecrets)...)
	// A targeted agent is shared: sessions on the same target container
	// with the same agent settings use one agent, named after both. Only
	// one agent can take a port's connections (the first redirect in the
	// pod's namespace gets them all), so several sessions stealing one
	// port with different HTTP filters must meet in one agent.
	name := "mirrord-agent-" + randomHex(5)
	if target != nil {
		h := sha256.New()
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00", namespace, target.Pod.UID, target.Container)
		json.NewEncoder(h).Encode(spec) // the token is not in it yet
		json.NewEncoder(h).Encode([]any{a.Labels, a.Annotations, a.TTL})
		name = "mirrord-agent-" + hex.EncodeToString(h.Sum(nil))[:10]
	}
	// The token is read from a Secret of the same name (AgentSecret), so
	// that a user who may read Jobs or pods cannot take it.
	spec.Containers[0].Env = append(spec.Containers[0].Env, corev1.EnvVar{Name: "MIRRORD_AGENT_TOKEN", ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: secretTokenKey},
	}})
	labels := map[string]string{"app": "mirrord", "mirrord.dev/agent": name}
	for k, v := range a.Labels {
		labels[k] = v
	}
	ttl := int32(max(a.TTL, 1))
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels, Annotations: a.Annotations},
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr(int32(0)),
			TTLSecondsAfterFinished: &ttl,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: a.Annotations},
				Spec:       spec,
			},
		},
	}
}

// secretTokenKey holds the session token in the agent's Secret.
const secretTokenKey = "token"

// AgentSecret is the Secret that holds an agent Job's session token: it
// has the Job's name and labels, and once the Job exists it is owned by
// it, so that it goes when the Job goes.
func AgentSecret(job *batchv1.Job, token string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: job.Name, Namespace: job.Namespace, Labels: job.Labels},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{secretTokenKey: []byte(token)},
	}
}

func ptr[T any](v T) *T { return &v }

// pullSecrets are agent.image_pull_secrets as a pod spec names them
// (entries without a name are ignored).
func pullSecrets(list []map[string]any) []corev1.LocalObjectReference {
	var out []corev1.LocalObjectReference
	for _, s := range list {
		if n, ok := s["name"].(string); ok {
			out = append(out, corev1.LocalObjectReference{Name: n})
		}
	}
	return out
}

// cannotPull says whether a waiting container's reason means its image
// will not come.
func cannotPull(reason string) bool {
	return reason == "ErrImagePull" || reason == "ImagePullBackOff" || reason == "InvalidImageName"
}

// agentLogLevel maps RUST_LOG-style levels ("info", "mirrord=debug,warn")
// to the agent's level.
func agentLogLevel(s string) string {
	for _, lvl := range []string{"trace", "debug", "info", "warn", "error"} {
		if strings.Contains(strings.ToLower(s), lvl) {
			if lvl == "trace" {
				return "debug"
			}
			return lvl
		}
	}
	return ""
}

func resources(m map[string]any) corev1.ResourceRequirements {
	var r corev1.ResourceRequirements
	conv := func(v any) corev1.ResourceList {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		out := corev1.ResourceList{}
		for k, q := range mm {
			if qty, err := resource.ParseQuantity(fmt.Sprint(q)); err == nil {
				out[corev1.ResourceName(k)] = qty
			}
		}
		return out
	}
	r.Requests = conv(m["requests"])
	r.Limits = conv(m["limits"])
	return r
}

func tolerations(ts []map[string]any) []corev1.Toleration {
	var out []corev1.Toleration
	for _, t := range ts {
		var tol corev1.Toleration
		if v, ok := t["key"].(string); ok {
			tol.Key = v
		}
		if v, ok := t["operator"].(string); ok {
			tol.Operator = corev1.TolerationOperator(v)
		}
		if v, ok := t["value"].(string); ok {
			tol.Value = v
		}
		if v, ok := t["effect"].(string); ok {
			tol.Effect = corev1.TaintEffect(v)
		}
		out = append(out, tol)
	}
	return out
}

// StartAgent creates the agent Job and returns once the agent answers
// through a port-forward to its pod; that connection is kept for the
// first connection to PortForward's address. Its steps (job created, pod
// scheduled, container running, agent listening) go to steps.
//
// A targeted agent is shared (see AgentJob): when the target's agent is
// already running, the session joins it instead.
func (c *Client) StartAgent(ctx context.Context, cfg *config.Config, target *Target, namespace string, steps *Steps) (*Agent, error) {
	timeout := time.Duration(cfg.Agent.StartupTimeout) * time.Second
	deadline := time.Now().Add(timeout)
	jobs := c.Clientset.BatchV1().Jobs(namespace)
	secrets := c.Clientset.CoreV1().Secrets(namespace)
	for {
		token := randomHex(16)
		job := AgentJob(cfg, target, namespace, token)
		secret, err := secrets.Create(ctx, AgentSecret(job, token), metav1.CreateOptions{})
		if err == nil {
			created, err := jobs.Create(ctx, job, metav1.CreateOptions{})
			if err == nil {
				steps.Done("agent job created", "job", created.Name)
				a := &Agent{Namespace: namespace, JobName: created.Name, Token: token, Shared: target != nil, client: c, jobUID: created.UID}
				a.ownSecret(ctx, secret, created)
				if target != nil && target.Duty != nil {
					if err := target.Duty.ownAccount(ctx, created.Name, created.UID); err != nil {
						// Revoke still removes it; only a killed
						// mirrord would leave it.
						steps.Logger().Warn("the agent's service account is not tied to its job", "err", err)
					}
				}
				if err := a.waitReady(ctx, time.Until(deadline), steps); err != nil {
					a.Delete(context.Background())
					return nil, err
				}
				return a, nil
			}
			// Not ours to hold the token of: a Job of that name (from
			// an older mirrord) has its token elsewhere.
			secrets.Delete(context.Background(), secret.Name, metav1.DeleteOptions{})
			if target == nil || !apierrors.IsAlreadyExists(err) {
				return nil, fmt.Errorf("create the agent job in namespace %q: %w", namespace, err)
			}
		} else if target == nil || !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create the agent's token Secret in namespace %q (mirrord needs create, get and delete on secrets there): %w", namespace, err)
		}
		a, err := c.joinAgent(ctx, namespace, job.Name, deadline, steps)
		if a != nil || err != nil {
			return a, err
		}
		// The agent was on its way out: start a new one.
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the target's agent (job %s/%s) kept exiting as sessions joined it for %s (agent.startup_timeout)", namespace, job.Name, timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// joinAgent connects to the running agent of job name. It returns no
// agent and no error when that agent has finished or is finishing (its
// last session left a TTL ago): the job is then deleted, for the caller to
// start a new one.
func (c *Client) joinAgent(ctx context.Context, namespace, name string, deadline time.Time, steps *Steps) (*Agent, error) {
	jobs := c.Clientset.BatchV1().Jobs(namespace)
	job, err := jobs.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		// A token Secret without its Job (mirrord was killed between
		// the two): remove it, for the caller to start anew.
		c.Clientset.CoreV1().Secrets(namespace).Delete(ctx, name, metav1.DeleteOptions{})
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the target's agent job %s/%s: %w", namespace, name, err)
	}
	token, err := c.agentToken(ctx, job)
	if err != nil {
		return nil, err
	}
	a := &Agent{Namespace: namespace, JobName: name, Token: token, Shared: true, Joined: true, client: c, jobUID: job.UID}
	if job.DeletionTimestamp == nil && job.Status.Succeeded == 0 && job.Status.Failed == 0 {
		steps.Done("joining the target's agent", "job", name)
		err := a.waitReady(ctx, time.Until(deadline), steps)
		if err == nil {
			return a, nil
		}
		// Only an agent that has ended is replaced: any other failure
		// (this user may not port-forward, say) must not take the
		// agent from the sessions that use it.
		if !errors.As(err, new(goneError)) || ctx.Err() != nil || time.Now().After(deadline) {
			return nil, err
		}
		steps.Logger().Debug("the target's agent went away as we joined", "job", name, "err", err)
	}
	if job.DeletionTimestamp == nil {
		a.Delete(context.Background())
	}
	return nil, nil
}

// waitReady watches the agent's pod, to learn its name and to fail fast
// when it cannot run, and meanwhile tries to reach the agent through a
// port-forward. It does not wait for the kubelet to report the container
// running: the kubelet notices a started container on its next relist (up
// to a second later), while a port-forward reaches the pod's network
// namespace as soon as it exists. Until the kubelet reports it running,
// only SPDY is tried (a refused SPDY upgrade then only means "not yet").
func (a *Agent) waitReady(ctx context.Context, timeout time.Duration, steps *Steps) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log := steps.Logger()
	job := fmt.Sprintf("job %s/%s", a.Namespace, a.JobName)
	w := agentWait{
		pods: a.client.Clientset.CoreV1().Pods(a.Namespace),
		// Without a resource version the watch starts with the pod as it is.
		opts:     metav1.ListOptions{LabelSelector: "job-name=" + a.JobName},
		watching: "the agent pod (" + job + ")",
		timedOut: func() error {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("the agent pod (%s) did not start within %s (agent.startup_timeout)", job, timeout)
			}
			return ctx.Err()
		},
		log: log,
	}
	running := false
	w.pod = func(ev watch.EventType, p *corev1.Pod) (bool, bool, error) {
		if ev == watch.Deleted {
			return false, false, goneError{fmt.Sprintf("the agent pod %s/%s was deleted before the agent started", a.Namespace, p.Name)}
		}
		if a.dialer == nil && p.Spec.NodeName != "" {
			a.PodName = p.Name
			w.reaching = fmt.Sprintf("the agent pod %s/%s", a.Namespace, p.Name)
			a.dialer = newPodDialer(a, log)
			steps.Done("agent pod scheduled", "pod", p.Name, "node", p.Spec.NodeName)
		}
		switch p.Status.Phase {
		case corev1.PodFailed, corev1.PodSucceeded:
			return false, false, goneError{fmt.Sprintf("the agent pod %s/%s stopped: %s", a.Namespace, p.Name, a.podLogs(p.Name))}
		}
		// A targeted agent is bound to its target's node (no scheduler);
		// a targetless one is scheduled by agent.node_selector and
		// agent.tolerations, which may match no node that has room.
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return false, false, fmt.Errorf("the agent pod %s/%s cannot be scheduled: %s; check agent.node_selector, agent.tolerations and agent.resources", a.Namespace, p.Name, c.Message)
			}
		}
		for _, cs := range p.Status.ContainerStatuses {
			if wt := cs.State.Waiting; wt != nil && cannotPull(wt.Reason) {
				return false, false, fmt.Errorf("the agent image %s cannot be pulled (%s: %s); set agent.image", cs.Image, wt.Reason, wt.Message)
			}
			if cs.State.Running != nil && !running {
				running = true
				steps.Done("agent container running", "pod", p.Name)
			}
		}
		return a.dialer != nil, running, nil
	}
	// The Job's events say why its pod cannot be created at all (Pod
	// Security admission, a quota, a webhook): the Job controller only
	// retries, and no pod ever shows in the pod watch. A user who may not
	// watch events waits for agent.startup_timeout instead. (A Job of the
	// same name before this one may have left events: only this one's
	// count.)
	selector := "involvedObject.kind=Job,involvedObject.name=" + a.JobName
	if a.jobUID != "" {
		selector += ",involvedObject.uid=" + string(a.jobUID)
	}
	if ew, err := a.client.Clientset.CoreV1().Events(a.Namespace).Watch(ctx, metav1.ListOptions{FieldSelector: selector}); err == nil {
		defer ew.Stop()
		w.events = ew.ResultChan()
		w.event = func(ev watch.Event) error {
			if e, isEvent := ev.Object.(*corev1.Event); isEvent && e.Reason == "FailedCreate" {
				return a.cannotCreate(ctx, e.Message)
			}
			return nil
		}
	} else {
		log.Debug("cannot watch the agent job's events", "err", err)
	}
	if err := a.await(ctx, &w); err != nil {
		return err
	}
	steps.Done("agent listening", "pod", a.PodName)
	return nil
}

// cannotCreate explains why the Job controller cannot create the agent's
// pod (msg is its FailedCreate event's), with the way out where there is
// one.
func (a *Agent) cannotCreate(ctx context.Context, msg string) error {
	msg = strings.TrimPrefix(msg, "Error creating: ")
	if !strings.Contains(msg, "violates PodSecurity") {
		return fmt.Errorf("the agent pod cannot be created (job %s/%s): %s", a.Namespace, a.JobName, msg)
	}
	level := "restricted or baseline"
	if ns, err := a.client.Clientset.CoreV1().Namespaces().Get(ctx, a.Namespace, metav1.GetOptions{}); err == nil {
		if l := ns.Labels[psaEnforceLabel]; l != "" {
			level = l
		}
	}
	return fmt.Errorf("namespace %q enforces Pod Security %q (label %s), which forbids the agent's pod (it needs hostPID and capabilities next to the target); "+
		"run the agent in a namespace that allows privileged pods with agent.namespace (--agent-namespace), for example one labelled %s=privileged; "+
		"or, without incoming traffic, in the target's pod with agent.ephemeral (-e) and agent.disabled_capabilities [%s] (it then runs as the target container's user, which the namespace allows; mirror and steal need NET_ADMIN, which it forbids). The admission said: %s",
		a.Namespace, level, psaEnforceLabel, psaEnforceLabel, quotedCaps(ephemeralCapabilities), msg)
}

// psaEnforceLabel is the namespace label that sets the Pod Security
// admission level.
const psaEnforceLabel = "pod-security.kubernetes.io/enforce"

// goneError is waitReady's error when the agent's pod has ended.
type goneError struct{ msg string }

func (e goneError) Error() string { return e.msg }

// refused says whether a failed probe failed for good: the API server
// answered that this user may not port-forward (the SPDY upgrade's error
// carries only the status message).
func refused(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "is forbidden") || strings.Contains(msg, "Unauthorized")
}

func (a *Agent) podLogs(pod string) string {
	req := a.client.Clientset.CoreV1().Pods(a.Namespace).GetLogs(pod, &corev1.PodLogOptions{Container: a.Container, TailLines: ptr(int64(20))})
	rc, err := req.Stream(context.Background())
	if err != nil {
		return "(no logs: " + err.Error() + ")"
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return strings.TrimSpace(string(b))
}

// Running says whether the agent's pod still runs: false once it is gone,
// ending or ended. An error means the API server could not say.
func (a *Agent) Running(ctx context.Context) (bool, error) {
	if a.Ephemeral {
		return a.ephemeralRunning(ctx)
	}
	pod, err := a.client.Clientset.CoreV1().Pods(a.Namespace).Get(ctx, a.PodName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return pod.DeletionTimestamp == nil && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed, nil
}

// agentToken reads the session token of a running agent's Job: from its
// Secret, or (a Job of an older mirrord) from its environment.
func (c *Client) agentToken(ctx context.Context, job *batchv1.Job) (string, error) {
	for _, e := range job.Spec.Template.Spec.Containers[0].Env {
		if e.Name != "MIRRORD_AGENT_TOKEN" {
			continue
		}
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			return e.Value, nil
		}
		ref := e.ValueFrom.SecretKeyRef
		secret, err := c.Clientset.CoreV1().Secrets(job.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsForbidden(err) {
			return "", fmt.Errorf("the target's agent (job %s/%s) runs for other sessions; joining it needs `get` on secrets in namespace %q, which this user lacks: %w", job.Namespace, job.Name, job.Namespace, err)
		}
		if err != nil {
			return "", fmt.Errorf("read the token of the target's agent (secret %s/%s): %w", job.Namespace, ref.Name, err)
		}
		return string(secret.Data[ref.Key]), nil
	}
	return "", nil
}

// ownSecret makes the agent's token Secret owned by its Job, so that the
// garbage collector removes it with the Job (also when the Job's TTL
// removes it, after mirrord was killed).
func (a *Agent) ownSecret(ctx context.Context, secret *corev1.Secret, job *batchv1.Job) {
	secret.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID,
	}}
	if _, err := a.client.Clientset.CoreV1().Secrets(a.Namespace).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		// Delete still removes it; only a killed mirrord would leave it.
		a.secretUnowned = true
	}
}

// Delete removes the agent job, its pod and its token Secret now. An
// ephemeral agent cannot be removed (see StartEphemeralAgent): only its
// token Secret, if still there, is.
func (a *Agent) Delete(ctx context.Context) error {
	if a.Ephemeral {
		err := a.client.Clientset.CoreV1().Secrets(a.Namespace).Delete(ctx, a.Container, metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	bg := metav1.DeletePropagationBackground
	err := a.client.Clientset.BatchV1().Jobs(a.Namespace).Delete(ctx, a.JobName, metav1.DeleteOptions{PropagationPolicy: &bg, GracePeriodSeconds: ptr(int64(0))})
	if serr := a.client.Clientset.CoreV1().Secrets(a.Namespace).Delete(ctx, a.JobName, metav1.DeleteOptions{}); serr != nil && !apierrors.IsNotFound(serr) && err == nil && a.secretUnowned {
		err = serr
	}
	return err
}
