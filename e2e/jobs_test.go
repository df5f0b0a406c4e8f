//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// jobTargets are a suspended CronJob and a Job that has finished: neither
// has a running pod.
const jobTargets = `
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: %[1]s}
spec:
  schedule: "0 3 1 1 *"
  suspend: true
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 0
          containers:
            - name: work
              image: %[2]s
              imagePullPolicy: Never
              command: [sh, -c, "echo the job ran; exit 3"]
              env: [{name: JOB_E2E, value: from-cronjob}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: once, namespace: %[1]s}
spec:
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 0
      containers:
        - name: work
          image: %[2]s
          imagePullPolicy: Never
          command: ["true"]
          env: [{name: JOB_E2E, value: from-job}]
`

// TestJobTargets: a CronJob (no pod between runs) and a finished Job are
// targets: the session runs against a copy of their pod (its image,
// environment and files; idle instead of doing the job's work), labelled
// as mirrord's, removed when the session ends — also after kill -9 of the
// CLI, with the agent's Job.
func TestJobTargets(t *testing.T) {
	c := newCluster(t)
	ns := c.namespace(t, "mirrord-jobs")
	c.apply(t, fmt.Sprintf(jobTargets, ns, busyboxImage))
	waitUntil(t, time.Minute, "job/once to finish", func() bool {
		return c.kubectl(t, "get", "job", "-n", ns, "once", "-o", "jsonpath={.status.succeeded}") == "1"
	})
	bin := buildMirrord(t)
	copies := func() string {
		return strings.TrimSpace(c.kubectl(t, "get", "pods", "-n", ns, "-l", "app=mirrord-copy", "-o", "name"))
	}
	for _, tc := range []struct{ target, env string }{{"cronjob/nightly", "from-cronjob"}, {"job/once", "from-job"}} {
		t.Run(tc.target, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			// The copy's own files: the image's busybox; its hostname is
			// the copy's name.
			out, err := exec.CommandContext(ctx, bin, "exec", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage,
				"-t", tc.target, "-n", ns, "--", "sh", "-c", "echo env=$JOB_E2E; echo host=$(cat /etc/hostname)").CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(string(out), "env="+tc.env) || !strings.Contains(string(out), "host=mirrord-copy-") {
				t.Errorf("output:\n%s", out)
			}
			waitUntil(t, 30*time.Second, "the copy to be removed", func() bool { return copies() == "" })
		})
	}

	t.Run("kill -9", func(t *testing.T) {
		cmd := exec.Command(bin, "exec", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage,
			"-t", "cronjob/nightly", "-n", ns, "--", "sh", "-c", "echo ready; exec sleep 600")
		cmd.Env = append(os.Environ(), "MIRRORD_AGENT_RECONNECT_TIMEOUT=2")
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 6)
		if _, err := stdout.Read(buf); err != nil {
			t.Fatal(err)
		}
		copy := copies()
		if copy == "" {
			t.Fatal("no copy while the session runs")
		}
		if logs := c.kubectl(t, "logs", "-n", ns, copy); strings.Contains(logs, "the job ran") {
			t.Errorf("the copy did the job's work: %q", logs)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		start := time.Now()
		waitUntil(t, 60*time.Second, "the copy to be removed with the agent's job", func() bool { return copies() == "" })
		t.Logf("copy gone %v after kill -9", time.Since(start).Round(time.Millisecond))
	})
	if jobs := c.kubectl(t, "get", "jobs", "-n", ns, "-o", "name"); strings.Contains(jobs, "nightly") {
		t.Errorf("the cronjob ran a job: %s", jobs)
	}
}
