package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// Target is a resolved target: one running pod and one of its containers.
type Target struct {
	Pod         *corev1.Pod
	Container   string
	ContainerID string // runtime ID without the "containerd://" prefix
	Runtime     string // "containerd", "docker", "cri-o"
	// Duty, for a copy made for feature.copy_target, is what the agent
	// does once the session is gone; nil otherwise.
	Duty *CopyDuty
}

// meshSidecars are containers injected by service meshes; they are never
// the application a user means.
var meshSidecars = []string{"istio-proxy", "istio-init", "linkerd-proxy", "linkerd-init", "vault-agent", "vault-agent-init", "kuma-sidecar", "kuma-init", "consul-connect-envoy-sidecar"}

var rolloutGVR = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "rollouts"}

// ResolveTarget finds the pod and container for kind/name in namespace.
// dyn may be nil when no rollout is involved.
func ResolveTarget(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, namespace, kind, name, container string) (*Target, error) {
	pods, err := candidatePods(ctx, cs, dyn, namespace, kind, name)
	if err != nil {
		return nil, err
	}
	pod, err := pickPod(pods, kind, name, namespace)
	if err != nil {
		return nil, err
	}
	return pickContainer(pod, container)
}

// ErrTargetNotFound marks ResolveTarget's error for a target that does
// not exist.
var ErrTargetNotFound = errors.New("target not found")

func notFound(kind, name, namespace string, err error) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("target %s/%s not found in namespace %q (list targets with `mirrord ls -n %s`)%w", kind, name, namespace, namespace, errorMark{ErrTargetNotFound})
	}
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("target %s/%s in namespace %q: permission denied: %v", kind, name, namespace, err)
	}
	return fmt.Errorf("target %s/%s in namespace %q: %w", kind, name, namespace, err)
}

func candidatePods(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, ns, kind, name string) ([]corev1.Pod, error) {
	var selector *metav1.LabelSelector
	switch kind {
	case "pod":
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, notFound(kind, name, ns, err)
		}
		return []corev1.Pod{*p}, nil
	case "deployment":
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, notFound(kind, name, ns, err)
		}
		selector = d.Spec.Selector
	case "statefulset":
		s, err := cs.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, notFound(kind, name, ns, err)
		}
		selector = s.Spec.Selector
	case "replicaset":
		r, err := cs.AppsV1().ReplicaSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, notFound(kind, name, ns, err)
		}
		selector = r.Spec.Selector
	case "job":
		j, err := cs.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, notFound(kind, name, ns, err)
		}
		selector = j.Spec.Selector
	case "cronjob":
		if _, err := cs.BatchV1().CronJobs(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			return nil, notFound(kind, name, ns, err)
		}
		// Its pods come and go with its schedule: a session runs
		// against a copy of its pod (StartCopy).
		return nil, nil
	case "service":
		s, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, notFound(kind, name, ns, err)
		}
		if len(s.Spec.Selector) == 0 {
			return nil, fmt.Errorf("target service/%s in namespace %q has no pod selector", name, ns)
		}
		selector = &metav1.LabelSelector{MatchLabels: s.Spec.Selector}
	case "rollout":
		if dyn == nil {
			return nil, fmt.Errorf("target rollout/%s: no dynamic client", name)
		}
		u, err := dyn.Resource(rolloutGVR).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, notFound(kind, name, ns, err)
		}
		var sel metav1.LabelSelector
		raw, _, _ := unstructuredMap(u.Object, "spec", "selector")
		if ml, ok := raw["matchLabels"].(map[string]any); ok {
			sel.MatchLabels = map[string]string{}
			for k, v := range ml {
				sel.MatchLabels[k] = fmt.Sprint(v)
			}
		}
		selector = &sel
	default:
		return nil, fmt.Errorf("target kind %q is not supported against Kubernetes", kind)
	}
	if selector == nil {
		return nil, fmt.Errorf("target %s/%s in namespace %q has no pod selector", kind, name, ns)
	}
	sel, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil || sel.Empty() {
		return nil, fmt.Errorf("target %s/%s: unusable pod selector: %v", kind, name, err)
	}
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, notFound(kind, name, ns, err)
	}
	return list.Items, nil
}

func unstructuredMap(obj map[string]any, path ...string) (map[string]any, bool, error) {
	cur := obj
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return nil, false, nil
		}
		cur = next
	}
	return cur, true, nil
}

func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// pickPod picks a running, ready pod: the oldest, so that repeated runs
// land on the same one while it lives.
func pickPod(pods []corev1.Pod, kind, name, ns string) (*corev1.Pod, error) {
	var ready []corev1.Pod
	var seen []string
	for _, p := range pods {
		seen = append(seen, fmt.Sprintf("%s (%s)", p.Name, p.Status.Phase))
		if podReady(&p) {
			ready = append(ready, p)
		}
	}
	if len(ready) == 0 {
		if len(seen) == 0 {
			return nil, fmt.Errorf("target %s/%s in namespace %q has no pods%w", kind, name, ns, errorMark{ErrNoRunningPod})
		}
		return nil, fmt.Errorf("target %s/%s in namespace %q has no running, ready pod (pods: %s)%w", kind, name, ns, strings.Join(seen, ", "), errorMark{ErrNoRunningPod})
	}
	sort.Slice(ready, func(i, j int) bool {
		ti, tj := ready[i].CreationTimestamp, ready[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return ready[i].Name < ready[j].Name
	})
	return &ready[0], nil
}

func pickContainer(pod *corev1.Pod, want string) (*Target, error) {
	var names, apps []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
		if !slices.Contains(meshSidecars, c.Name) {
			apps = append(apps, c.Name)
		}
	}
	name := want
	switch {
	case want != "":
		if !slices.Contains(names, want) {
			return nil, fmt.Errorf("pod %s has no container %q (containers: %s)", pod.Name, want, strings.Join(names, ", "))
		}
	case len(apps) == 1:
		name = apps[0]
	case len(apps) == 0:
		return nil, fmt.Errorf("pod %s has only mesh sidecar containers (%s); name one with /container/NAME", pod.Name, strings.Join(names, ", "))
	default:
		return nil, fmt.Errorf("pod %s has several containers (%s); choose one with %s/container/NAME", pod.Name, strings.Join(apps, ", "), "pod/"+pod.Name)
	}
	for _, st := range pod.Status.ContainerStatuses {
		if st.Name != name {
			continue
		}
		if st.State.Running == nil {
			return nil, fmt.Errorf("container %q of pod %s is not running", name, pod.Name)
		}
		runtime, id, ok := strings.Cut(st.ContainerID, "://")
		if !ok || id == "" {
			return nil, fmt.Errorf("container %q of pod %s has no container ID yet", name, pod.Name)
		}
		return &Target{Pod: pod, Container: name, ContainerID: id, Runtime: runtime}, nil
	}
	return nil, fmt.Errorf("container %q of pod %s has no status yet", name, pod.Name)
}

// HTTPProbePorts returns the ports of the pod that kubelet probes with
// plain-HTTP GETs (liveness, readiness and startup probes of every
// container: they share the pod's network), named ports resolved against
// the container's ports. An unfiltered steal of such a port still lets the
// probes through to the pod's app.
func (t *Target) HTTPProbePorts() []uint16 {
	var ports []uint16
	for _, c := range t.Pod.Spec.Containers {
		for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if p == nil || p.HTTPGet == nil || (p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP) {
				continue
			}
			port := p.HTTPGet.Port.IntValue()
			if p.HTTPGet.Port.Type == intstr.String {
				port = 0
				for _, cp := range c.Ports {
					if cp.Name == p.HTTPGet.Port.StrVal {
						port = int(cp.ContainerPort)
					}
				}
			}
			if port > 0 && port < 65536 && !slices.Contains(ports, uint16(port)) {
				ports = append(ports, uint16(port))
			}
		}
	}
	return ports
}

// errorMark lets an error wrap a sentinel without changing its text.
type errorMark struct{ err error }

func (errorMark) Error() string   { return "" }
func (m errorMark) Unwrap() error { return m.err }
