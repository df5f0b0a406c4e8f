//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// webPodTemplate is the pod template of the test's "web" workloads (the
// test app on port 80, labelled app=web; %[2]s is its image), under a
// workload's spec.
const webPodTemplate = `  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: %[2]s
          imagePullPolicy: Never
          args: [serve]
          ports: [{name: http, containerPort: 80}]
          env:
            - {name: SERVICE_NAME, value: web}
            - {name: PORT, value: "80"}
            - {name: APP_GREETING, value: hello from web}
          readinessProbe:
            httpGet: {path: /health, port: http}
            periodSeconds: 2
`

// copyTargetApp is a Deployment of two replicas behind a Service, in a
// namespace of the test's own (copy_target.scale_down scales it to 0).
const copyTargetApp = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: %[1]s}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
` + webPodTemplate + `---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: %[1]s}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
`

// copySession is a `mirrord exec` running in the background.
type copySession struct {
	cmd  *exec.Cmd
	out  string        // the file its output goes to
	done chan struct{} // closed once it has ended
}

// startCopySession runs command under mirrord with cfg against
// deploy/web, and waits for its first line of output ("ready").
func (c *cluster) startCopySession(t *testing.T, ns, cfg string, env []string, command ...string) *copySession {
	t.Helper()
	dir := t.TempDir()
	cfgFile, outFile := filepath.Join(dir, "mirrord.json"), filepath.Join(dir, "out")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(outFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(buildMirrord(t), append([]string{"exec", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage,
		"-t", "deploy/web", "-n", ns, "-f", cfgFile, "--"}, command...)...)
	logFile := filepath.Join(dir, "mirrord.log")
	cmd.Env = append(append(os.Environ(), "MIRRORD_LOG_LEVEL=debug", "MIRRORD_LOG_FILE="+logFile), env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &copySession{cmd: cmd, out: outFile, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.stop(syscall.SIGTERM)
		out.Close()
		if t.Failed() {
			t.Logf("session output:\n%s\nmirrord's log:\n%s", readFile(outFile), readFile(logFile))
			pods, _ := c.run(context.Background(), "get", "pods,jobs", "-n", ns, "-o", "wide")
			copies, _ := c.run(context.Background(), "describe", "pods", "-n", ns, "-l", "mirrord.dev/copy-of")
			t.Logf("namespace %s:\n%s\n%s", ns, pods, copies)
		}
	})
	waitUntil(t, 2*time.Minute, "the session to start", func() bool {
		select {
		case <-s.done:
			t.Fatalf("the session ended: %v", cmd.ProcessState)
		default:
		}
		return strings.Contains(readFile(outFile), "ready\n") || strings.Contains(readFile(outFile), "listening\n")
	})
	return s
}

// stop sends sig and waits for the session to end.
func (s *copySession) stop(sig syscall.Signal) {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// copyState is what copy_target leaves in the namespace: copies, agent
// Jobs, token Secrets, the agent's ServiceAccount/Role/RoleBinding, and
// the Deployment's replicas and mirrord annotations.
type copyState struct {
	copies, jobs, secrets, rbac []string
	replicas                    string
	annotations                 string
}

func (c *cluster) copyState(t *testing.T, ns string) copyState {
	t.Helper()
	names := func(args ...string) []string {
		return strings.Fields(c.kubectl(t, append([]string{"get", "-n", ns, "-o", "name"}, args...)...))
	}
	var rbac []string
	for _, kind := range []string{"serviceaccounts", "roles", "rolebindings"} {
		for _, n := range names(kind) {
			if strings.Contains(n, "mirrord") {
				rbac = append(rbac, n)
			}
		}
	}
	return copyState{
		copies:      names("pods", "-l", "mirrord.dev/copy-of"),
		jobs:        names("jobs", "-l", "app=mirrord"),
		secrets:     names("secrets", "-l", "app=mirrord"),
		rbac:        rbac,
		replicas:    c.kubectl(t, "get", "deploy", "-n", ns, "web", "-o", "jsonpath={.spec.replicas}"),
		annotations: c.kubectl(t, "get", "deploy", "-n", ns, "web", "-o", `jsonpath={.metadata.annotations.mirrord\.dev/scaled-down-by}{.metadata.annotations.mirrord\.dev/replicas}`),
	}
}

// clean says whether the namespace is as it was before the session.
func (s copyState) clean() bool {
	return len(s.copies)+len(s.jobs)+len(s.secrets)+len(s.rbac) == 0 && s.replicas == "2" && s.annotations == ""
}

// endpoints are the addresses the Service sends traffic to.
func (c *cluster) endpoints(t *testing.T, ns, svc string) string {
	return c.kubectl(t, "get", "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name="+svc, "-o", "jsonpath={.items[*].endpoints[*].addresses[*]}")
}

// TestCopyTarget: feature.copy_target runs the session against a copy of
// the target's pod (its real containers, no probes, its own name), which
// the Service does not send traffic to unless the session steals (then
// the copy takes its share of the Service's requests next to the real
// pods, and the steal brings them to the local app);
// copy_target.scale_down scales the Deployment to 0 for the session, and
// its replicas come back at the end — within 10 s after kill -9 of the
// CLI too. Every session leaves nothing behind: no copy, agent Job,
// Secret, ServiceAccount, Role or RoleBinding, and the Deployment as it
// was.
func TestCopyTarget(t *testing.T) {
	c := newCluster(t)
	ns := c.namespace(t, "mirrord-copy")
	c.apply(t, fmt.Sprintf(copyTargetApp, ns, testappImage))
	c.kubectl(t, "rollout", "status", "-n", ns, "deploy/web", "--timeout=2m")
	svcIP := c.serviceIP(t, ns, "web")
	realPods := func() []string {
		return strings.Fields(c.kubectl(t, "get", "pods", "-n", ns, "-l", "app=web,!mirrord.dev/copy-of", "-o", "name"))
	}
	copyPod := func() pod {
		t.Helper()
		var list podList
		c.getJSON(t, &list, "pods", "-n", ns, "-l", "mirrord.dev/copy-of=deployment.web")
		if len(list.Items) != 1 {
			t.Fatalf("%d copies of deploy/web, want 1", len(list.Items))
		}
		return list.Items[0]
	}
	waitClean := func(t *testing.T, d time.Duration) {
		t.Helper()
		start := time.Now()
		var s copyState
		waitUntil(t, d, "nothing left behind", func() bool { s = c.copyState(t, ns); return s.clean() })
		t.Logf("clean %v after the session ended", time.Since(start).Round(100*time.Millisecond))
		waitUntil(t, 2*time.Minute, "deploy/web to have 2 ready pods", func() bool {
			return c.kubectl(t, "get", "deploy", "-n", ns, "web", "-o", "jsonpath={.status.readyReplicas}") == "2"
		})
	}

	t.Run("copy", func(t *testing.T) {
		s := c.startCopySession(t, ns, `{"feature": {"copy_target": true}}`, nil,
			"sh", "-c", `echo "host=$(cat /etc/hostname) greeting=$APP_GREETING"; echo ready; exec sleep 600`)
		out := readFile(s.out)
		if !strings.Contains(out, "host=mirrord-copy-web-") || !strings.Contains(out, "greeting=hello from web") {
			t.Errorf("the session does not see the copy's files and env:\n%s", out)
		}
		cp := copyPod()
		// The copy runs the real app (not an idle command): it answers.
		if body, err := podGet(cp.Status.PodIP, "/", nil); err != nil || !strings.Contains(body, `"service": "web"`) {
			t.Errorf("the copy's app: %q, %v", body, err)
		}
		if eps := c.endpoints(t, ns, "web"); strings.Contains(" "+eps+" ", " "+cp.Status.PodIP+" ") {
			t.Errorf("the Service sends traffic to the copy (%s) although the session does not steal: %s", cp.Status.PodIP, eps)
		}
		if probes := c.kubectl(t, "get", "pod", "-n", ns, cp.Metadata.Name, "-o", "jsonpath={.spec.containers[*].readinessProbe}"); probes != "" {
			t.Errorf("the copy has probes: %s", probes)
		}
		if n := len(realPods()); n != 2 {
			t.Errorf("%d real pods during a session without scale_down, want 2", n)
		}
		s.stop(syscall.SIGTERM)
		waitClean(t, 30*time.Second)
	})

	t.Run("copy with steal", func(t *testing.T) {
		// Without scale_down the copy joins the Service's endpoints next
		// to the real pods: the steal takes the copy's share, the real
		// pods answer theirs (and any request sent to them) untouched.
		s := c.startCopySession(t, ns, `{"feature": {"copy_target": true,
			"network": {"incoming": {"mode": "steal", "port_mapping": [[18189, 80]]}}}}`, nil,
			"python3", "../integration/testdata/pyserver.py", "18189", "local answer")
		cp := copyPod()
		waitUntil(t, time.Minute, "the Service to send traffic to the copy and the real pods", func() bool {
			eps := strings.Fields(c.endpoints(t, ns, "web"))
			return len(eps) == 3 && slices.Contains(eps, cp.Status.PodIP)
		})
		if n := len(realPods()); n != 2 {
			t.Errorf("%d real pods during a session without scale_down, want 2", n)
		}
		stolen, real := 0, 0
		waitUntil(t, time.Minute, "requests through the Service to reach both the local app and the real pods", func() bool {
			body, err := podGet(svcIP, "/", nil)
			switch {
			case err != nil:
			case body == "local answer":
				stolen++
			case strings.Contains(body, `"service": "web"`) && !strings.Contains(body, cp.Metadata.Name):
				real++
			default:
				t.Fatalf("an answer from neither the local app nor a real pod: %q", body)
			}
			return stolen > 0 && real > 0
		})
		t.Logf("%d requests stolen at the copy, %d answered by the real pods", stolen, real)
		var list podList
		c.getJSON(t, &list, "pods", "-n", ns, "-l", "app=web,!mirrord.dev/copy-of")
		for _, p := range list.Items {
			if body, err := podGet(p.Status.PodIP, "/", nil); err != nil || !strings.Contains(body, `"service": "web"`) {
				t.Errorf("real pod %s: %q, %v", p.Metadata.Name, body, err)
			}
		}
		s.stop(syscall.SIGTERM)
		waitClean(t, 30*time.Second)
	})

	stealCfg := `{"feature": {"copy_target": {"scale_down": true},
		"network": {"incoming": {"mode": "steal", "port_mapping": [[18190, 80]]}}}}`
	t.Run("scale_down with steal", func(t *testing.T) {
		s := c.startCopySession(t, ns, stealCfg, nil, "python3", "../integration/testdata/pyserver.py", "18190", "local answer")
		waitUntil(t, time.Minute, "deploy/web to be scaled down and its pods gone", func() bool {
			return c.copyState(t, ns).replicas == "0" && len(realPods()) == 0
		})
		st := c.copyState(t, ns)
		cp := copyPod()
		if !strings.HasPrefix(st.annotations, cp.Metadata.Name) {
			t.Errorf("deploy/web's annotations %q do not name the copy %s", st.annotations, cp.Metadata.Name)
		}
		if len(st.rbac) != 3 {
			t.Errorf("the agent's permissions: %v, want a ServiceAccount, a Role and a RoleBinding", st.rbac)
		}
		// The copy keeps the pod's labels: the Service's traffic now all
		// goes to it, and the steal takes it to the local app.
		waitUntil(t, time.Minute, "the Service to send traffic to the copy", func() bool {
			return strings.TrimSpace(c.endpoints(t, ns, "web")) == cp.Status.PodIP
		})
		waitUntil(t, time.Minute, "the Service's requests to be stolen", func() bool {
			body, _ := podGet(svcIP, "/through-service", nil)
			return body == "local answer"
		})
		if !strings.Contains(readFile(s.out), "GOT /through-service") {
			t.Errorf("the local app did not get the request")
		}

		// Only one session at a time scales a workload down.
		second, err := c.mirrord(t, 2*time.Minute, "exec", "-t", "deploy/web", "-n", ns, "-f", writeFile(t, stealCfg), "--", "true")
		if err == nil || !strings.Contains(second, "already scaled down by another mirrord session") {
			t.Errorf("a second scale_down session: %v\n%s", err, second)
		}
		if n := len(c.copyState(t, ns).copies); n != 1 {
			t.Errorf("%d copies after the refused session, want 1", n)
		}

		s.stop(syscall.SIGTERM)
		waitClean(t, 30*time.Second)
	})

	t.Run("scale_down kill -9", func(t *testing.T) {
		// The agent waits agent.reconnect_timeout (30 s here) for the
		// killed session before it exits; the replicas come back long
		// before that, from the agent, 3 s after the session is gone.
		s := c.startCopySession(t, ns, `{"feature": {"copy_target": {"scale_down": true}}}`,
			[]string{"MIRRORD_AGENT_RECONNECT_TIMEOUT=30"}, "sh", "-c", "echo ready; exec sleep 600")
		waitUntil(t, time.Minute, "deploy/web to be scaled down", func() bool { return c.copyState(t, ns).replicas == "0" })
		s.stop(syscall.SIGKILL)
		killed := time.Now()
		waitUntil(t, 10*time.Second, "deploy/web's replicas to be restored after kill -9", func() bool {
			st := c.copyState(t, ns)
			return st.replicas == "2" && st.annotations == ""
		})
		t.Logf("replicas restored %v after kill -9", time.Since(killed).Round(100*time.Millisecond))
		waitClean(t, 90*time.Second)
		t.Logf("nothing left %v after kill -9", time.Since(killed).Round(100*time.Millisecond))
	})
}

// writeFile writes s to a file of the test's and returns its name.
func writeFile(t *testing.T, s string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "mirrord.json")
	if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}
