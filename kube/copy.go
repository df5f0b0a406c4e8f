package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/mirrord-go/mirrord/config"
)

// ErrNoRunningPod marks ResolveTarget's error for a workload that has no
// running, ready pod (a CronJob between runs, a finished Job).
var ErrNoRunningPod = errors.New("no running pod")

// Mount point and volume of the mirrord binary in a pod copy.
const (
	copyBinDir    = "/.mirrord"
	copyBinVolume = "mirrord-bin"
)

// StartCopy runs a pod made from the pod template of a Job or CronJob, for
// a session to target when the workload has no running pod: every
// container keeps its image, environment, volumes and security settings,
// but idles instead of doing the job's work (which would run twice), with
// the mirrord binary, copied in by an init container from the agent
// image, as its command. The copy carries mirrord's labels, not the
// template's, so that no Service or controller takes it. It returns once
// the copy runs; Adopt ties it to the agent's Job, and DeleteCopy removes
// it.
func (c *Client) StartCopy(ctx context.Context, cfg *config.Config, ns, kind, name string, steps *Steps) (*corev1.Pod, error) {
	var tmpl corev1.PodTemplateSpec
	switch kind {
	case "cronjob":
		cj, err := c.Clientset.BatchV1().CronJobs(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, notFound(kind, name, ns, err)
		}
		tmpl = cj.Spec.JobTemplate.Spec.Template
	case "job":
		j, err := c.Clientset.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, notFound(kind, name, ns, err)
		}
		tmpl = j.Spec.Template
	default:
		return nil, fmt.Errorf("target %s/%s: only jobs and cronjobs are copied", kind, name)
	}
	pod := CopyPod(tmpl, cfg, ns, kind, name)
	created, err := c.Clientset.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("target %s/%s has no running pod, and a copy of its pod cannot be created in namespace %q: %w", kind, name, ns, err)
	}
	steps.Done("target copy created", "pod", created.Name)
	running, err := c.waitCopy(ctx, created, time.Duration(cfg.Agent.StartupTimeout)*time.Second)
	if err != nil {
		c.DeleteCopy(context.Background(), created)
		return nil, err
	}
	steps.Done("target copy running", "pod", running.Name)
	return running, nil
}

// CopyPod is the pod StartCopy creates from tmpl.
func CopyPod(tmpl corev1.PodTemplateSpec, cfg *config.Config, ns, kind, name string) *corev1.Pod {
	spec := tmpl.Spec.DeepCopy()
	spec.RestartPolicy = corev1.RestartPolicyNever
	spec.ActiveDeadlineSeconds = nil
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: copyBinVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	install := corev1.Container{
		Name:            "mirrord-install",
		Image:           string(cfg.Agent.Image),
		ImagePullPolicy: corev1.PullPolicy(cfg.Agent.ImagePullPolicy),
		Command:         []string{"/mirrord", "copy-self", copyBinDir + "/mirrord"},
		VolumeMounts:    []corev1.VolumeMount{{Name: copyBinVolume, MountPath: copyBinDir}},
	}
	spec.InitContainers = append([]corev1.Container{install}, spec.InitContainers...)
	for i := range spec.Containers {
		ct := &spec.Containers[i]
		ct.Command, ct.Args = []string{copyBinDir + "/mirrord", "idle"}, nil
		ct.LivenessProbe, ct.ReadinessProbe, ct.StartupProbe = nil, nil, nil
		ct.VolumeMounts = append(ct.VolumeMounts, corev1.VolumeMount{Name: copyBinVolume, MountPath: copyBinDir, ReadOnly: true})
	}
	spec.ImagePullSecrets = append(spec.ImagePullSecrets, pullSecrets(cfg.Agent.ImagePullSecrets)...)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "mirrord-copy-" + trimName(name, 40) + "-",
			Namespace:    ns,
			Labels:       map[string]string{"app": "mirrord-copy", CopyOfLabel: kind + "." + trimName(name, 50)},
			Annotations:  tmpl.Annotations,
		},
		Spec: *spec,
	}
}

func trimName(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// waitCopy waits until every container of the copy runs.
func (c *Client) waitCopy(ctx context.Context, pod *corev1.Pod, timeout time.Duration) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pods := c.Clientset.CoreV1().Pods(pod.Namespace)
	for {
		p, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("the target's copy %s/%s did not run within %s (agent.startup_timeout)", pod.Namespace, pod.Name, timeout)
			}
			return nil, fmt.Errorf("the target's copy %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			return nil, fmt.Errorf("the target's copy %s/%s stopped (%s): %s", p.Namespace, p.Name, p.Status.Phase, p.Status.Message)
		}
		running := p.Status.Phase == corev1.PodRunning
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			if w := cs.State.Waiting; w != nil && (cannotPull(w.Reason) || w.Reason == "CreateContainerConfigError") {
				return nil, fmt.Errorf("the target's copy %s/%s cannot start container %s (%s: %s)", p.Namespace, p.Name, cs.Name, w.Reason, w.Message)
			}
		}
		for _, cs := range p.Status.ContainerStatuses {
			running = running && cs.State.Running != nil
		}
		if running && len(p.Status.ContainerStatuses) == len(p.Spec.Containers) {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the target's copy %s/%s did not run within %s (agent.startup_timeout)", pod.Namespace, pod.Name, timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Adopt makes the agent's Job own pod (a target copy), so that the garbage
// collector removes the copy with the Job, also when mirrord was killed.
func (a *Agent) Adopt(ctx context.Context, pod *corev1.Pod) error {
	if a.jobUID == "" {
		return errors.New("the agent's job is not known")
	}
	if pod.Namespace != a.Namespace {
		// An owner in another namespace counts as absent: the garbage
		// collector would delete the copy at once.
		return fmt.Errorf("the agent's job is in namespace %q, the copy in %q (agent.namespace), and an owner must be in its dependent's namespace", a.Namespace, pod.Namespace)
	}
	patch := fmt.Sprintf(`{"metadata":{"ownerReferences":[{"apiVersion":"batch/v1","kind":"Job","name":%q,"uid":%q}]}}`, a.JobName, a.jobUID)
	_, err := a.client.Clientset.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

// DeleteCopy removes a target copy now.
func (c *Client) DeleteCopy(ctx context.Context, pod *corev1.Pod) error {
	err := c.Clientset.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// TargetOf is the target container of a pod, as ResolveTarget picks it.
func TargetOf(pod *corev1.Pod, container string) (*Target, error) {
	return pickContainer(pod, container)
}
