package kube

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynfake "k8s.io/client-go/dynamic/fake"

	"github.com/mirrord-go/mirrord/config"
)

// TestTargetCopyPod: the copy keeps the pod's containers, loses its
// probes, node and hostname, and carries the pod's labels (minus the
// controller's) only when the session steals.
func TestTargetCopyPod(t *testing.T) {
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
	orig := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-7d9c-abcde", Namespace: "shop",
			Labels:      map[string]string{"app": "web", "tier": "front", "pod-template-hash": "7d9c"},
			Annotations: map[string]string{"team": "a"}},
		Spec: corev1.PodSpec{
			NodeName: "node-1", Hostname: "web-0", Subdomain: "web", Priority: new(int32), ServiceAccountName: "web-sa",
			Containers: []corev1.Container{{Name: "web", Image: "web:1", Args: []string{"serve"}, LivenessProbe: probe, ReadinessProbe: probe, StartupProbe: probe}},
		},
	}
	for _, serve := range []bool{false, true} {
		p := TargetCopyPod(orig, serve, "deployment", "web")
		c := p.Spec.Containers[0]
		switch {
		case p.Namespace != "shop" || !strings.HasPrefix(p.GenerateName, "mirrord-copy-web-"):
			t.Errorf("serve=%v: namespace %q, generateName %q", serve, p.Namespace, p.GenerateName)
		case c.Image != "web:1" || !slices.Equal(c.Args, []string{"serve"}) || p.Spec.ServiceAccountName != "web-sa":
			t.Errorf("serve=%v: the copy does not run the pod's container: %+v", serve, c)
		case c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil:
			t.Errorf("serve=%v: probes kept", serve)
		case p.Spec.NodeName != "" || p.Spec.Hostname != "" || p.Spec.Subdomain != "" || p.Spec.Priority != nil:
			t.Errorf("serve=%v: node %q hostname %q subdomain %q priority %v kept", serve, p.Spec.NodeName, p.Spec.Hostname, p.Spec.Subdomain, p.Spec.Priority)
		case p.Labels[CopyOfLabel] != "deployment.web":
			t.Errorf("serve=%v: labels %v lack %s", serve, p.Labels, CopyOfLabel)
		case p.Labels["pod-template-hash"] != "":
			t.Errorf("serve=%v: the ReplicaSet's label is kept: %v", serve, p.Labels)
		case serve && (p.Labels["app"] != "web" || p.Labels["tier"] != "front"):
			t.Errorf("a stealing session's copy lacks the pod's labels (its Service would not select it): %v", p.Labels)
		case !serve && (p.Labels["app"] == "web" || p.Labels["tier"] != ""):
			t.Errorf("the copy of a session that does not steal has the pod's labels (its Service would send it traffic): %v", p.Labels)
		}
	}
	if orig.Spec.Containers[0].ReadinessProbe == nil || orig.Labels["pod-template-hash"] == "" {
		t.Error("the original pod was changed")
	}
}

func deployment(name string, replicas int64, annotations map[string]any) *unstructured.Unstructured {
	meta := map[string]any{"name": name, "namespace": "shop"}
	if annotations != nil {
		meta["annotations"] = annotations
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
		"spec": map[string]any{"replicas": replicas},
	}}
}

// TestScaleDownRestore: a session scales its workload to 0 and records
// the count; another session may not scale it down meanwhile, nor restore
// it; the session's restore (the CLI's or the agent's, whichever comes
// first) brings the count back and removes the annotations, and a second
// restore does nothing.
func TestScaleDownRestore(t *testing.T) {
	ctx := context.Background()
	scheme := runtime.NewScheme()
	gvr := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{gvr: "DeploymentList"},
		deployment("web", 3, nil))
	w := Workload{Namespace: "shop", Kind: "deployment", Name: "web"}
	get := func() *unstructured.Unstructured {
		u, err := dyn.Resource(gvr).Namespace("shop").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}

	if err := CheckScalable(ctx, dyn, w); err != nil {
		t.Fatal(err)
	}
	if err := ScaleDown(ctx, dyn, w, "copy-a"); err != nil {
		t.Fatal(err)
	}
	if u := get(); replicasOf(u) != 0 || u.GetAnnotations()[ScaledDownByAnnotation] != "copy-a" || u.GetAnnotations()[ReplicasAnnotation] != "3" {
		t.Fatalf("after ScaleDown: %v", u.Object)
	}
	if err := ScaleDown(ctx, dyn, w, "copy-a"); err != nil {
		t.Errorf("ScaleDown again by the same session: %v", err)
	}
	if u := get(); u.GetAnnotations()[ReplicasAnnotation] != "3" {
		t.Errorf("ScaleDown again lost the count: %v", u.GetAnnotations())
	}
	for _, err := range []error{CheckScalable(ctx, dyn, w), ScaleDown(ctx, dyn, w, "copy-b")} {
		if err == nil || !strings.Contains(err.Error(), "already scaled down by another mirrord session") || !strings.Contains(err.Error(), "copy-a") {
			t.Errorf("another session: %v", err)
		}
	}
	if restored, err := RestoreScale(ctx, dyn, w, "copy-b"); restored || err != nil {
		t.Errorf("another session's restore: %v, %v", restored, err)
	}
	if restored, err := RestoreScale(ctx, dyn, w, "copy-a"); !restored || err != nil {
		t.Fatalf("restore: %v, %v", restored, err)
	}
	if u := get(); replicasOf(u) != 3 || len(u.GetAnnotations()) != 0 {
		t.Errorf("after RestoreScale: %v", u.Object)
	}
	if restored, err := RestoreScale(ctx, dyn, w, "copy-a"); restored || err != nil {
		t.Errorf("a second restore: %v, %v", restored, err)
	}
	// A restore by the session after someone scaled it by hand in
	// between leaves their count alone.
	if err := ScaleDown(ctx, dyn, w, "copy-c"); err != nil {
		t.Fatal(err)
	}
	if u := get(); u.GetAnnotations()[ReplicasAnnotation] != "3" {
		t.Errorf("a second session recorded %v", u.GetAnnotations())
	}
}

// TestScaleDownGone: restoring a workload that was deleted meanwhile is
// not an error.
func TestScaleDownGone(t *testing.T) {
	gvr := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	dyn := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{gvr: "DeploymentList"})
	if restored, err := RestoreScale(context.Background(), dyn, Workload{Namespace: "shop", Kind: "deployment", Name: "web"}, "copy-a"); restored || err != nil {
		t.Errorf("%v, %v", restored, err)
	}
}

// TestParseWorkload: the agent's --restore flag round-trips, and names
// only what scale_down scales.
func TestParseWorkload(t *testing.T) {
	w := Workload{Namespace: "shop", Kind: "rollout", Name: "web"}
	if got, err := ParseWorkload(w.Flag()); err != nil || got != w {
		t.Errorf("%q: %+v, %v", w.Flag(), got, err)
	}
	for _, bad := range []string{"shop/pod/web", "shop/deployment", "/deployment/web", "shop/deployment/"} {
		if _, err := ParseWorkload(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestAgentJobDuty: the agent of a copy with a duty runs as the duty's
// service account, with its token, and is told what to restore and
// delete.
func TestAgentJobDuty(t *testing.T) {
	cfg := defaultConfig(t)
	target := &Target{Pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "mirrord-copy-web-x", UID: "u1"}, Spec: corev1.PodSpec{NodeName: "n"}}, Container: "web", ContainerID: "abc"}
	plain := AgentJob(cfg, target, "shop", "tok")
	if plain.Spec.Template.Spec.ServiceAccountName != "" || *plain.Spec.Template.Spec.AutomountServiceAccountToken {
		t.Errorf("an agent without a duty gets API credentials")
	}
	target.Duty = &CopyDuty{Copy: typesName("shop", "mirrord-copy-web-x"), Workload: &Workload{Namespace: "shop", Kind: "deployment", Name: "web"}, ServiceAccount: "mirrord-copy-web-x"}
	job := AgentJob(cfg, target, "shop", "tok")
	spec := job.Spec.Template.Spec
	args := strings.Join(spec.Containers[0].Args, " ")
	switch {
	case spec.ServiceAccountName != "mirrord-copy-web-x" || !*spec.AutomountServiceAccountToken:
		t.Errorf("service account %q automount %v", spec.ServiceAccountName, *spec.AutomountServiceAccountToken)
	case !strings.Contains(args, "--copy-pod shop/mirrord-copy-web-x") || !strings.Contains(args, "--restore shop/deployment/web") || !strings.Contains(args, "--restore-after 3s"):
		t.Errorf("args %s", args)
	case job.Name == plain.Name:
		t.Error("the agent with a duty has the name of the one without: a session could join an agent that lacks it")
	}
}

func defaultConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Decode(map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func typesName(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}
