package kube

import (
	"context"
	"fmt"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
)

// ListTargets lists what `mirrord exec -t` accepts in namespace: running
// pods (with each container), deployments, rollouts, statefulsets, jobs,
// cronjobs and services with selectors.
func (c *Client) ListTargets(ctx context.Context, ns string) ([]string, error) {
	var out []string
	pods, err := c.Clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods in namespace %q: %w", ns, err)
	}
	for _, p := range pods.Items {
		if !podReady(&p) {
			continue
		}
		out = append(out, "pod/"+p.Name)
		if len(p.Spec.Containers) > 1 {
			for _, ct := range p.Spec.Containers {
				out = append(out, "pod/"+p.Name+"/container/"+ct.Name)
			}
		}
	}
	if l, err := c.Clientset.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, d := range l.Items {
			if d.Status.AvailableReplicas > 0 {
				out = append(out, "deployment/"+d.Name)
			}
		}
	}
	if l, err := c.Clientset.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, s := range l.Items {
			out = append(out, "statefulset/"+s.Name)
		}
	}
	if l, err := c.Clientset.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, j := range l.Items {
			if j.Labels["app"] != "mirrord" { // not our own agents
				out = append(out, "job/"+j.Name)
			}
		}
	}
	if l, err := c.Clientset.BatchV1().CronJobs(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, j := range l.Items {
			out = append(out, "cronjob/"+j.Name)
		}
	}
	if l, err := c.Clientset.CoreV1().Services(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, s := range l.Items {
			if len(s.Spec.Selector) > 0 {
				out = append(out, "service/"+s.Name)
			}
		}
	}
	if dyn, err := dynamic.NewForConfig(c.Config); err == nil {
		// Argo rollouts exist only where their CRD is installed.
		if l, err := dyn.Resource(rolloutGVR).Namespace(ns).List(ctx, metav1.ListOptions{}); err == nil {
			for _, r := range l.Items {
				out = append(out, "rollout/"+r.GetName())
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// Namespaces lists the cluster's namespaces; nil when the user may not
// list them (a namespace-scoped role).
func (c *Client) Namespaces(ctx context.Context) []string {
	l, err := c.Clientset.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(l.Items))
	for _, n := range l.Items {
		out = append(out, n.Name)
	}
	return out
}
