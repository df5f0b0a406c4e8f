//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// restrictedPod passes Pod Security "restricted": the target the user has
// in a locked-down namespace.
const restrictedPod = `
apiVersion: v1
kind: Pod
metadata: {name: sleeper, namespace: %s}
spec:
  terminationGracePeriodSeconds: 0
  securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: sleeper
      image: %s
      imagePullPolicy: Never
      command: [sleep, "3600"]
      env: [{name: PSA_E2E, value: inside-restricted}]
      securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
`

// TestPodSecurityRestricted: in a namespace whose Pod Security admission
// enforces "restricted", the agent's pod is forbidden. mirrord says so at
// once — the label and the way out — and leaves no Job; the way out
// (agent.namespace pointing at a namespace that allows the agent) works.
func TestPodSecurityRestricted(t *testing.T) {
	c := newCluster(t)
	ns := c.namespace(t, "mirrord-psa")
	c.kubectl(t, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
	c.apply(t, fmt.Sprintf(restrictedPod, ns, busyboxImage))
	c.waitReady(t, ns, "sleeper")
	bin := buildMirrord(t)
	mirrord := func(args ...string) (string, time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		full := append([]string{"exec", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage, "-t", "pod/sleeper", "-n", ns}, args...)
		start := time.Now()
		out, err := exec.CommandContext(ctx, bin, full...).CombinedOutput()
		return string(out), time.Since(start), err
	}

	out, took, err := mirrord("--", "true")
	if err == nil {
		t.Fatalf("mirrord exec succeeded in a restricted namespace:\n%s", out)
	}
	t.Logf("refused after %v", took.Round(time.Millisecond))
	for _, want := range []string{"pod-security.kubernetes.io/enforce", `"restricted"`, "agent.namespace", "agent.ephemeral", "agent.disabled_capabilities"} {
		if !strings.Contains(out, want) {
			t.Errorf("the error lacks %q:\n%s", want, out)
		}
	}
	// The refusal is noticed from the Job's events (0.15 s here, the
	// whole run), not at agent.startup_timeout (60 s).
	if took > 2*time.Second {
		t.Errorf("took %v to report the refusal", took.Round(time.Second))
	}
	waitUntil(t, 30*time.Second, "the refused agent's Job and Secret to be removed", func() bool {
		jobs := c.kubectl(t, "get", "jobs,secrets", "-n", ns, "-l", "app=mirrord", "-o", "name")
		return strings.TrimSpace(jobs) == ""
	})

	// The way out: the agent in a namespace that allows it.
	out, _, err = mirrord("--agent-namespace", fixtureNamespace, "--", "sh", "-c", "echo env=$PSA_E2E")
	if err != nil || !strings.Contains(out, "env=inside-restricted") {
		t.Errorf("with --agent-namespace %s: %v\n%s", fixtureNamespace, err, out)
	}

	// An ephemeral agent with its capabilities (NET_ADMIN, SYS_PTRACE,
	// as root) is refused too: the error says which and the way out.
	out, took, err = mirrord("-e", "--", "true")
	if err == nil {
		t.Fatalf("an ephemeral agent with capabilities was admitted in a restricted namespace:\n%s", out)
	}
	t.Logf("ephemeral agent refused after %v", took.Round(time.Millisecond))
	for _, want := range []string{"pod-security.kubernetes.io/enforce", "NET_ADMIN", "agent.disabled_capabilities"} {
		if !strings.Contains(out, want) {
			t.Errorf("the ephemeral agent's error lacks %q:\n%s", want, out)
		}
	}
	// The other way out: an ephemeral agent without capabilities runs as
	// the target container's user, which the namespace admits; env, DNS
	// and outgoing traffic work (incoming would need NET_ADMIN).
	cfg := filepath.Join(t.TempDir(), "mirrord.json")
	os.WriteFile(cfg, []byte(`{"agent": {"ephemeral": true, "disabled_capabilities": ["NET_ADMIN", "SYS_PTRACE"]}}`), 0o644)
	out, _, err = mirrord("-f", cfg, "--", "sh", "-c",
		"echo env=$PSA_E2E; curl -sS --max-time 10 http://backend.default.svc.cluster.local:8080/health >/dev/null && echo backend-ok")
	if err != nil || !strings.Contains(out, "env=inside-restricted") || !strings.Contains(out, "backend-ok") {
		t.Errorf("with an ephemeral agent without capabilities: %v\n%s", err, out)
	}
	if secrets := c.kubectl(t, "get", "secrets", "-n", ns, "-l", "app=mirrord", "-o", "name"); strings.TrimSpace(secrets) != "" {
		t.Errorf("token Secrets left: %s", secrets)
	}
}
