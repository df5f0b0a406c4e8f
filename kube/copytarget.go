package kube

import (
	"context"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mirrord-go/mirrord/config"
)

// CopyOfLabel marks every pod mirrord makes as a copy of a target (for
// feature.copy_target, and for Job and CronJob targets without a running
// pod): its value is "KIND.NAME" of the target.
const CopyOfLabel = "mirrord.dev/copy-of"

// controllerLabels are the labels controllers put on the pods they own
// to tell them apart. A copy does not carry them: with them, the
// ReplicaSet (or Job) of the original would count the copy as its own and
// delete a pod to get back to its replica count.
var controllerLabels = []string{
	"pod-template-hash", "rollouts-pod-template-hash", "controller-revision-hash",
	"statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index",
	"controller-uid", "job-name", "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name",
	"batch.kubernetes.io/job-completion-index",
}

// TargetCopyPod is the pod feature.copy_target runs in place of orig: the
// same containers, images, commands, environment, volumes, service
// account and security settings, under a name of its own, scheduled anew,
// without liveness, readiness or startup probes (as upstream's copy: a
// breakpoint in a stolen request must not get the copy restarted, and the
// copy is ready as soon as it runs).
//
// Its labels decide whether Services send it traffic. With serve false
// it carries only mirrord's labels, so that no Service selects it: the
// session sees the target's environment, files and network without taking
// any of the real pods' requests. With serve true (the session steals)
// it keeps orig's labels, minus the ones controllers use to tell their
// pods apart (so that no ReplicaSet adopts it), so the target's Services
// send it its share of requests — all of them once copy_target.scale_down
// has scaled the workload to 0 — and the steal takes them there, leaving
// the real pods' traffic alone.
func TargetCopyPod(orig *corev1.Pod, serve bool, kind, name string) *corev1.Pod {
	spec := orig.Spec.DeepCopy()
	// Scheduled anew: the original's node may not have room for another.
	spec.NodeName = ""
	// A StatefulSet's pod has its own hostname (web-0); the copy is not
	// that pod.
	spec.Hostname, spec.Subdomain = "", ""
	spec.EphemeralContainers = nil
	// Priority admission computes it again from priorityClassName, and
	// refuses a pod that brings its own.
	spec.Priority = nil
	for _, list := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range list {
			list[i].LivenessProbe, list[i].ReadinessProbe, list[i].StartupProbe = nil, nil, nil
		}
	}
	labels := map[string]string{"app": "mirrord-copy"}
	if serve {
		labels = maps.Clone(orig.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		for _, l := range controllerLabels {
			delete(labels, l)
		}
	}
	labels[CopyOfLabel] = kind + "." + trimName(name, 50)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "mirrord-copy-" + trimName(name, 40) + "-",
			Namespace:    orig.Namespace,
			Labels:       labels,
			Annotations:  orig.Annotations,
		},
		Spec: *spec,
	}
}

// StartTargetCopy runs TargetCopyPod of target's pod and returns it once
// every container runs (DeleteCopy removes it).
func (c *Client) StartTargetCopy(ctx context.Context, cfg *config.Config, target *Target, kind, name string, steps *Steps) (*corev1.Pod, error) {
	serve := cfg.Feature.Network.Incoming.Mode == config.IncomingSteal
	pod := TargetCopyPod(target.Pod, serve, kind, name)
	created, err := c.Clientset.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("feature.copy_target: create a copy of pod %s in namespace %q: %w", target.Pod.Name, pod.Namespace, err)
	}
	steps.Done("target copy created", "pod", created.Name, "of", target.Pod.Name)
	running, err := c.waitCopy(ctx, created, time.Duration(cfg.Agent.StartupTimeout)*time.Second)
	if err != nil {
		c.DeleteCopy(context.Background(), created)
		return nil, err
	}
	steps.Done("target copy running", "pod", running.Name, "node", running.Spec.NodeName)
	return running, nil
}
