package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// The annotations copy_target.scale_down leaves on a workload while it is
// scaled down: which session did it (the name of its target copy) and the
// replica count to restore. Whoever restores the workload — the CLI at
// the end of the session, or the agent once the session is gone — reads
// them, and only a restore that finds its own session's name acts.
const (
	ScaledDownByAnnotation = "mirrord.dev/scaled-down-by"
	ReplicasAnnotation     = "mirrord.dev/replicas"
)

// Workload is a workload copy_target.scale_down scales: a Deployment, an
// Argo Rollout, a StatefulSet or a ReplicaSet that nothing owns.
type Workload struct {
	Namespace string
	Kind      string // deployment, rollout, statefulset or replicaset
	Name      string
}

func (w Workload) String() string { return w.Kind + "/" + w.Name }

// gvr is the workload's API resource.
func (w Workload) gvr() schema.GroupVersionResource {
	switch w.Kind {
	case "rollout":
		return rolloutGVR
	default:
		return schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: w.Kind + "s"}
	}
}

// Flag is the workload as the agent's --restore flag carries it.
func (w Workload) Flag() string { return w.Namespace + "/" + w.Kind + "/" + w.Name }

// ParseWorkload reads Flag's form.
func ParseWorkload(s string) (Workload, error) {
	var w Workload
	parts := strings.SplitN(s, "/", 3)
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return w, fmt.Errorf("workload %q: want NAMESPACE/KIND/NAME", s)
	}
	w = Workload{Namespace: parts[0], Kind: parts[1], Name: parts[2]}
	switch w.Kind {
	case "deployment", "rollout", "statefulset", "replicaset":
		return w, nil
	}
	return w, fmt.Errorf("workload %q: kind %q cannot be scaled", s, w.Kind)
}

// ScaledWorkload is the workload scale_down scales for target kind/name:
// the target itself, or for a ReplicaSet the Deployment or Rollout that
// owns it (scaling the ReplicaSet would be undone by its owner).
func ScaledWorkload(ctx context.Context, cs kubernetes.Interface, ns, kind, name string) (Workload, error) {
	switch kind {
	case "deployment", "rollout", "statefulset":
		return Workload{Namespace: ns, Kind: kind, Name: name}, nil
	case "replicaset":
		rs, err := cs.AppsV1().ReplicaSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return Workload{}, notFound(kind, name, ns, err)
		}
		if owner := metav1.GetControllerOf(rs); owner != nil {
			switch owner.Kind {
			case "Deployment":
				return Workload{Namespace: ns, Kind: "deployment", Name: owner.Name}, nil
			case "Rollout":
				return Workload{Namespace: ns, Kind: "rollout", Name: owner.Name}, nil
			}
			return Workload{}, fmt.Errorf("feature.copy_target.scale_down: target replicaset/%s is controlled by %s/%s, which mirrord does not scale", name, owner.Kind, owner.Name)
		}
		return Workload{Namespace: ns, Kind: kind, Name: name}, nil
	}
	return Workload{}, fmt.Errorf("feature.copy_target.scale_down: target %s/%s cannot be scaled down; scale_down works with deployment, rollout, statefulset and replicaset targets", kind, name)
}

// errScaledByOther is CheckScalable's and ScaleDown's error when another
// session holds the workload scaled down.
func errScaledByOther(w Workload, by string) error {
	return fmt.Errorf("feature.copy_target.scale_down: %s in namespace %q is already scaled down by another mirrord session (its copy is pod %s); only one session at a time can scale a workload down. "+
		"If no such session runs, restore spec.replicas from the annotation %s and remove the annotations %s and %s",
		w, w.Namespace, by, ReplicasAnnotation, ReplicasAnnotation, ScaledDownByAnnotation)
}

// CheckScalable fails when the workload cannot be read, or another
// session has it scaled down: checked before the copy is made, so that
// the session ends before it changes anything.
func CheckScalable(ctx context.Context, dyn dynamic.Interface, w Workload) error {
	u, err := dyn.Resource(w.gvr()).Namespace(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("feature.copy_target.scale_down: read %s in namespace %q: %w", w, w.Namespace, err)
	}
	if by := u.GetAnnotations()[ScaledDownByAnnotation]; by != "" {
		return errScaledByOther(w, by)
	}
	return nil
}

// ScaleDown scales w to 0 replicas for the session whose copy is named
// by, and records the replica count it had in ReplicasAnnotation. It is
// a no-op when the session has already done it. The change is made only
// on the version of the workload that was read (a concurrent change, or
// another session's scale-down, makes it start over).
func ScaleDown(ctx context.Context, dyn dynamic.Interface, w Workload, by string) error {
	return retryConflict(ctx, func() error {
		u, err := dyn.Resource(w.gvr()).Namespace(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("feature.copy_target.scale_down: read %s in namespace %q: %w", w, w.Namespace, err)
		}
		replicas := replicasOf(u)
		switch owner := u.GetAnnotations()[ScaledDownByAnnotation]; {
		case owner == by && replicas == 0:
			return nil
		case owner == by:
			// Restored meanwhile: a restore removes the annotations,
			// so this is someone's change on top of ours; scale down
			// again and keep the count we recorded.
			return patchScale(ctx, dyn, w, u.GetResourceVersion(), 0, map[string]any{})
		case owner != "":
			return errScaledByOther(w, owner)
		}
		err = patchScale(ctx, dyn, w, u.GetResourceVersion(), 0, map[string]any{
			ScaledDownByAnnotation: by,
			ReplicasAnnotation:     strconv.FormatInt(replicas, 10),
		})
		if apierrors.IsForbidden(err) {
			return fmt.Errorf("feature.copy_target.scale_down: this user may not patch %s in namespace %q: %w", w, w.Namespace, err)
		}
		return err
	})
}

// RestoreScale gives w back the replica count recorded when the session
// whose copy is named by scaled it down, and removes the annotations. It
// says whether it restored anything: a workload that this session did not
// scale down (or that is already restored) is left alone.
func RestoreScale(ctx context.Context, dyn dynamic.Interface, w Workload, by string) (bool, error) {
	restored := false
	err := retryConflict(ctx, func() error {
		u, err := dyn.Resource(w.gvr()).Namespace(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("restore %s in namespace %q: %w", w, w.Namespace, err)
		}
		ann := u.GetAnnotations()
		if ann[ScaledDownByAnnotation] != by {
			return nil
		}
		n, err := strconv.ParseInt(ann[ReplicasAnnotation], 10, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("restore %s in namespace %q: annotation %s is %q, not a replica count", w, w.Namespace, ReplicasAnnotation, ann[ReplicasAnnotation])
		}
		if err := patchScale(ctx, dyn, w, u.GetResourceVersion(), n, map[string]any{ScaledDownByAnnotation: nil, ReplicasAnnotation: nil}); err != nil {
			return fmt.Errorf("restore %s in namespace %q to %d replicas: %w", w, w.Namespace, n, err)
		}
		restored = true
		return nil
	})
	return restored, err
}

// replicasOf is spec.replicas, which defaults to 1.
func replicasOf(u *unstructured.Unstructured) int64 {
	n, found, err := unstructured.NestedInt64(u.Object, "spec", "replicas")
	if !found || err != nil {
		return 1
	}
	return n
}

// patchScale sets spec.replicas and annotations (nil values remove one)
// on the version rv of the workload: the resourceVersion in a merge patch
// is a precondition, so a concurrent change fails it with a conflict.
func patchScale(ctx context.Context, dyn dynamic.Interface, w Workload, rv string, replicas int64, annotations map[string]any) error {
	meta := map[string]any{"resourceVersion": rv}
	if len(annotations) > 0 {
		meta["annotations"] = annotations
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta, "spec": map[string]any{"replicas": replicas}})
	if err != nil {
		return err
	}
	_, err = dyn.Resource(w.gvr()).Namespace(w.Namespace).Patch(ctx, w.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// retryConflict runs f again while it fails with a conflict (the
// workload changed between read and patch), a few times.
func retryConflict(ctx context.Context, f func() error) error {
	var err error
	for range 10 {
		if err = f(); !apierrors.IsConflict(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return err
}
