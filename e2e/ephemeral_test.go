//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ephemeralAgents lists the agent containers added to pod: name → state
// ("running", "terminated" or "waiting").
func (c *cluster) ephemeralAgents(t *testing.T, ns, podName string) map[string]string {
	t.Helper()
	var p struct {
		Status struct {
			EphemeralContainerStatuses []struct {
				Name  string `json:"name"`
				State struct {
					Running    *struct{} `json:"running"`
					Terminated *struct{} `json:"terminated"`
				} `json:"state"`
			} `json:"ephemeralContainerStatuses"`
		} `json:"status"`
	}
	c.getJSON(t, &p, "pod", "-n", ns, podName)
	out := map[string]string{}
	for _, s := range p.Status.EphemeralContainerStatuses {
		if !strings.HasPrefix(s.Name, "mirrord-agent-") {
			continue
		}
		switch {
		case s.State.Terminated != nil:
			out[s.Name] = "terminated"
		case s.State.Running != nil:
			out[s.Name] = "running"
		default:
			out[s.Name] = "waiting"
		}
	}
	return out
}

// TestEphemeralAgent: with -e the agent is an ephemeral container in the
// target's pod (no Job, no hostPID): the program gets the target's env and
// files, cluster DNS and outgoing traffic under both engines, a steal and a
// mirror of the target's port; each session adds its own container, which exits
// when the session ends (it stays in the pod's status: Kubernetes cannot
// remove an ephemeral container), and its token Secret is gone.
func TestEphemeralAgent(t *testing.T) {
	c := newCluster(t)
	ns := c.namespace(t, "mirrord-eph")
	c.apply(t, fmt.Sprintf(targetPod, ns, testappImage))
	c.waitReady(t, ns, "target")
	backendIP := c.serviceIP(t, fixtureNamespace, "backend")
	script := `echo "service=$SERVICE_NAME"; grep -q "hello from the e2e test app's config file" /app/config.json && echo file-ok;
		getent hosts backend.default.svc.cluster.local; curl -sS --max-time 10 http://backend.default.svc.cluster.local:8080/health >/dev/null && echo backend-ok`
	for _, engine := range []string{"preload", "netstack"} {
		t.Run(engine, func(t *testing.T) {
			start := time.Now()
			out, err := c.mirrord(t, 2*time.Minute, "exec", "-e", "--engine", engine, "-t", "pod/target", "-n", ns, "--", "sh", "-c", script)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, w := range []string{"service=target", "file-ok", backendIP, "backend-ok"} {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			t.Logf("%s session: %v", engine, time.Since(start).Round(time.Millisecond))
		})
	}
	agents := c.ephemeralAgents(t, ns, "target")
	if len(agents) != 2 {
		t.Errorf("ephemeral agent containers %v; want one per session", agents)
	}
	if jobs := c.kubectl(t, "get", "jobs", "-n", ns, "-o", "name"); strings.TrimSpace(jobs) != "" {
		t.Errorf("jobs in the target's namespace: %s", jobs)
	}
	if secrets := c.kubectl(t, "get", "secrets", "-n", ns, "-l", "app=mirrord", "-o", "name"); strings.TrimSpace(secrets) != "" {
		t.Errorf("token Secrets left: %s", secrets)
	}
	waitUntil(t, 30*time.Second, "the agents to exit after their sessions", func() bool {
		for _, s := range c.ephemeralAgents(t, ns, "target") {
			if s != "terminated" {
				return false
			}
		}
		return true
	})

	// Incoming traffic: a steal (the local app answers instead of the
	// target's) and a mirror (the target's app answers; the local app
	// gets a copy). Each on a request path of its own.
	var target pod
	c.getJSON(t, &target, "pod", "-n", ns, "target")
	get := func(path string) string {
		client := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Get("http://" + target.Status.PodIP + ":8080" + path)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b))
	}
	for _, tc := range []struct {
		mode, path string
		port       int
	}{
		{"steal", "/hostname", 18191},
		{"mirror", "/hostname?mirrored", 18192},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			if got := get(tc.path); got != "target" {
				t.Fatalf("before the session the target answered %q", got)
			}
			dir := t.TempDir()
			cfg := filepath.Join(dir, "mirrord.json")
			os.WriteFile(cfg, []byte(fmt.Sprintf(`{"feature": {"network": {"incoming": {"mode": %q, "port_mapping": [[%d, 8080]]}}}}`, tc.mode, tc.port)), 0o644)
			outFile, err := os.Create(filepath.Join(dir, "out"))
			if err != nil {
				t.Fatal(err)
			}
			defer outFile.Close()
			cmd := exec.Command(buildMirrord(t), "exec", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage, "-e",
				"-t", "pod/target", "-n", ns, "-f", cfg, "--", "python3", "../integration/testdata/pyserver.py", strconv.Itoa(tc.port), "answered by the ephemeral agent's session")
			cmd.Stdout, cmd.Stderr = outFile, outFile
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			stopped := false
			stop := func() {
				if !stopped {
					stopped = true
					cmd.Process.Signal(syscall.SIGTERM)
					cmd.Wait()
				}
			}
			defer stop()
			switch tc.mode {
			case "steal":
				waitUntil(t, 2*time.Minute, "the steal", func() bool { return get(tc.path) == "answered by the ephemeral agent's session" })
			case "mirror":
				waitUntil(t, 2*time.Minute, "a mirrored copy of a request", func() bool {
					if got := get(tc.path); got != "target" {
						t.Fatalf("under mirror the answer was %q, not the target's", got)
					}
					return strings.Contains(readFile(outFile.Name()), "GOT "+tc.path+"\n")
				})
			}
			stop()
			// The redirect goes with the session.
			waitUntil(t, 30*time.Second, "the target's app to answer alone", func() bool { return get(tc.path) == "target" })
			if t.Failed() {
				t.Logf("mirrord output:\n%s", readFile(outFile.Name()))
			}
		})
	}

	t.Run("no ephemeralcontainers permission", func(t *testing.T) {
		const sa = "mirrord-e2e-noephemeral"
		c.apply(t, `apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: `+sa+`, namespace: `+ns+`}
rules:
- {apiGroups: [""], resources: [pods, pods/log], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [pods/portforward], verbs: [create, get]}
- {apiGroups: [""], resources: [secrets], verbs: [get, create, update, delete]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: `+sa+`, namespace: `+ns+`}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: `+sa+`}
subjects: [{kind: ServiceAccount, name: `+sa+`, namespace: `+fixtureNamespace+`}]
`)
		kubeconfig := c.serviceAccountKubeconfig(t, sa)
		before := len(c.ephemeralAgents(t, ns, "target"))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		start := time.Now()
		out, err := exec.CommandContext(ctx, buildMirrord(t), "exec", "--kubeconfig", kubeconfig, "--agent-image", agentImage,
			"-e", "-t", "pod/target", "-n", ns, "--", "true").CombinedOutput()
		if err == nil {
			t.Fatalf("mirrord exec -e succeeded without pods/ephemeralcontainers:\n%s", out)
		}
		t.Logf("refused after %v:\n%s", time.Since(start).Round(time.Millisecond), out)
		for _, want := range []string{"pods/ephemeralcontainers", "update", ns, "agent.ephemeral"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("the error lacks %q", want)
			}
		}
		if secrets := c.kubectl(t, "get", "secrets", "-n", ns, "-l", "app=mirrord", "-o", "name"); strings.TrimSpace(secrets) != "" {
			t.Errorf("token Secrets left: %s", secrets)
		}
		if n := len(c.ephemeralAgents(t, ns, "target")); n != before {
			t.Errorf("ephemeral agents: %d before, %d after", before, n)
		}
	})
}

// busyboxTarget is a target with a shell, from which a test can kill the
// ephemeral agent (it shares the target container's PID namespace).
const busyboxTarget = `
apiVersion: v1
kind: Pod
metadata: {name: bb, namespace: %s}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: app
      image: %s
      imagePullPolicy: Never
      command: [sleep, "3600"]
      env: [{name: EPH_E2E, value: busybox-target}]
`

// TestEphemeralAgentReplaced: when the ephemeral agent dies (kill -9 from
// inside the target's PID namespace), the session adds a new agent
// container to the pod — an ephemeral container cannot be restarted —
// and the program's next connection goes through it.
func TestEphemeralAgentReplaced(t *testing.T) {
	c := newCluster(t)
	ns := c.namespace(t, "mirrord-eph-re")
	c.apply(t, fmt.Sprintf(busyboxTarget, ns, busyboxImage))
	c.waitReady(t, ns, "bb")
	dir := t.TempDir()
	goFile := filepath.Join(dir, "go")
	outFile, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	cmd := exec.Command(buildMirrord(t), "exec", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage, "-e",
		"-t", "pod/bb", "-n", ns, "--", "sh", "-c", `echo "env=$EPH_E2E"; while [ ! -e `+goFile+` ]; do sleep 0.2; done;
		curl -sS --max-time 20 http://backend.default.svc.cluster.local:8080/health >/dev/null && echo after-ok`)
	cmd.Stdout, cmd.Stderr = outFile, outFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("mirrord output:\n%s", readFile(outFile.Name()))
		}
	}()
	waitUntil(t, 2*time.Minute, "the session to start", func() bool { return strings.Contains(readFile(outFile.Name()), "env=busybox-target") })
	first := c.ephemeralAgents(t, ns, "bb")
	if len(first) != 1 {
		t.Fatalf("ephemeral agents %v; want one", first)
	}
	// The agent is the target's PID namespace's only "mirrord" process.
	c.exec(t, ns, "bb", "app", "sh", "-c", `kill -9 $(pidof mirrord)`)
	waitUntil(t, time.Minute, "a second agent container", func() bool {
		agents := c.ephemeralAgents(t, ns, "bb")
		running := 0
		for _, s := range agents {
			if s == "running" {
				running++
			}
		}
		return len(agents) == 2 && running == 1
	})
	os.WriteFile(goFile, nil, 0o644)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("mirrord exec: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the program did not finish")
	}
	for _, w := range []string{"after-ok", "starting a new agent"} {
		if !strings.Contains(readFile(outFile.Name()), w) {
			t.Errorf("output lacks %q", w)
		}
	}
}
