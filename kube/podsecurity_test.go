package kube

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestCannotCreate: a Job's FailedCreate event becomes the error: for Pod
// Security admission, one that names the namespace's level, its label and
// the way out; for anything else, the event's own words.
func TestCannotCreate(t *testing.T) {
	cs := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "locked",
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "baseline"}}})
	a := &Agent{Namespace: "locked", JobName: "mirrord-agent-x", client: &Client{Clientset: cs}}
	err := a.cannotCreate(context.Background(), `Error creating: pods "mirrord-agent-x-abcde" is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostPID=true)`)
	for _, want := range []string{`namespace "locked"`, `"baseline"`, "pod-security.kubernetes.io/enforce", "agent.namespace", "agent.ephemeral", `"NET_ADMIN", "SYS_PTRACE"`, "hostPID=true"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	err = a.cannotCreate(context.Background(), `Error creating: pods "mirrord-agent-x-abcde" is forbidden: exceeded quota: q, requested: pods=1, used: pods=10, limited: pods=10`)
	if msg := err.Error(); !strings.Contains(msg, "exceeded quota") || strings.Contains(msg, "Pod Security") || strings.Contains(msg, "Error creating") {
		t.Errorf("quota: %v", err)
	}
}
