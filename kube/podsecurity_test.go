package kube

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
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

// TestWaitReadyRefusals: a Job agent whose pod cannot be created or
// started ends the wait with the reason, not at agent.startup_timeout:
// the Job's FailedCreate events (Pod Security, a quota, a webhook), a pod
// the scheduler cannot place, an image that cannot be pulled.
func TestWaitReadyRefusals(t *testing.T) {
	const ns, job = "work", "mirrord-agent-x"
	pod := func(status corev1.PodStatus) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: job + "-abcde", Namespace: ns, Labels: map[string]string{"job-name": job}}, Status: status}
	}
	event := func(msg string) *corev1.Event {
		return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: job + ".1", Namespace: ns}, Reason: "FailedCreate", Message: msg,
			InvolvedObject: corev1.ObjectReference{Kind: "Job", Name: job, Namespace: ns}}
	}
	for _, tt := range []struct {
		name string
		obj  runtime.Object
		want []string
	}{
		{"admission webhook", event(`Error creating: admission webhook "deny.example.com" denied the request: no privileged pods`),
			[]string{"the agent pod cannot be created (job work/mirrord-agent-x)", `admission webhook "deny.example.com" denied the request: no privileged pods`}},
		{"quota", event(`Error creating: pods "mirrord-agent-x-abcde" is forbidden: exceeded quota: q, requested: pods=1, used: pods=10, limited: pods=10`),
			[]string{"the agent pod cannot be created", "exceeded quota"}},
		{"unschedulable", pod(corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled,
			Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."}}}),
			[]string{"the agent pod work/mirrord-agent-x-abcde cannot be scheduled: 0/2 nodes are available", "agent.node_selector"}},
		{"image pull", pod(corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Image: "example.com/mirrord:none",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "not found"}}}}}),
			[]string{"the agent image example.com/mirrord:none cannot be pulled (ErrImagePull: not found); set agent.image"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cs := fake.NewClientset()
			// The fake API server tells a watch only what is made after
			// it starts: make the object once both watches run.
			watching := make(chan string, 2)
			cs.PrependWatchReactor("*", func(action k8stesting.Action) (bool, watch.Interface, error) {
				watching <- action.GetResource().Resource
				return false, nil, nil
			})
			a := &Agent{Namespace: ns, JobName: job, client: &Client{Clientset: cs}}
			done := make(chan error, 1)
			go func() { done <- a.waitReady(context.Background(), 10*time.Second, NewSteps(nil)) }()
			<-watching
			<-watching
			start := time.Now()
			var err error
			switch o := tt.obj.(type) {
			case *corev1.Pod:
				_, err = cs.CoreV1().Pods(ns).Create(context.Background(), o, metav1.CreateOptions{})
			case *corev1.Event:
				_, err = cs.CoreV1().Events(ns).Create(context.Background(), o, metav1.CreateOptions{})
			}
			if err != nil {
				t.Fatal(err)
			}
			got := <-done
			if got == nil {
				t.Fatal("the wait ended without an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(got.Error(), w) {
					t.Errorf("error %q lacks %q", got, w)
				}
			}
			// At once, not at the 10 s timeout.
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %v", took)
			}
		})
	}
}
