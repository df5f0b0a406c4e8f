//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/mirrord-go/mirrord/kube"
)

var (
	mirrordBin string
	buildDir   string // mirrordBin's directory, removed by TestMain
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// buildMirrord builds the CLI once per test binary.
func buildMirrord(t *testing.T) string {
	t.Helper()
	if mirrordBin != "" {
		return mirrordBin
	}
	// A directory of this run's own: another checkout's e2e run on the
	// machine builds its own mirrord (a fixed path would let one run test
	// the other's binary). TestMain removes it.
	dir, err := os.MkdirTemp("", "mirrord-e2e-cli-")
	if err != nil {
		t.Fatal(err)
	}
	buildDir = dir
	out := filepath.Join(dir, "mirrord")
	cmd := exec.Command("go", "build", "-o", out, "../cmd/mirrord")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build mirrord: %v\n%s", err, b)
	}
	mirrordBin = out
	return out
}

// mirrord runs the CLI against the e2e cluster.
func (c *cluster) mirrord(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{args[0], "--kubeconfig", c.kubeconfig, "--agent-image", agentImage}, args[1:]...)
	cmd := exec.CommandContext(ctx, buildMirrord(t), full...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// agentJobs lists the mirrord agent jobs left in the fixture namespace.
func (c *cluster) agentJobs(t *testing.T) []string {
	out := c.kubectl(t, "get", "jobs", "-n", fixtureNamespace, "-l", "app=mirrord", "-o", "name")
	return strings.Fields(out)
}

// TestExecTargets runs a command under each engine against each kind of
// target: the pod's env, a file only the container has, cluster DNS
// (short and full names), TCP to a ClusterIP-only service (curl and
// Python) and UDP to one (a DNS query sent straight to the kube-dns
// ClusterIP); targetless gets the cluster's network and DNS only.
func TestExecTargets(t *testing.T) {
	c := newCluster(t)
	pods := c.fixturePods(t, pyServ)
	if len(pods) == 0 {
		t.Fatal("no py-serv pods")
	}
	dnsIP := c.serviceIP(t, "kube-system", "kube-dns")
	backendIP := c.serviceIP(t, fixtureNamespace, "backend")
	network := `getent hosts backend.default.svc.cluster.local >/dev/null && echo dns-full-ok;
		curl -sS --max-time 10 http://backend:8080/health >/dev/null && echo backend-ok;
		python3 -c 'import socket; socket.create_connection(("backend", 8080), timeout=10); print("python-backend-ok")';
		python3 testdata/udpdns.py ` + dnsIP + ` backend.default.svc.cluster.local;`
	pod := `echo "greeting=$APP_GREETING"; echo "fixture=$MIRRORD_E2E_FIXTURE";
		grep -q "hello from the e2e test app's config file" /app/config.json && echo file-ok;`
	netWant := []string{"dns-full-ok", "backend-ok", "python-backend-ok", "udp-dns " + backendIP}
	podWant := append([]string{"greeting=hello from py-serv", "fixture=py-serv", "file-ok"}, netWant...)
	targets := []struct {
		target string
		script string
		want   []string
	}{
		{"deploy/" + pyServ, pod + network, podWant},
		{"deployment/" + pyServ + "/container/" + pyServ, pod + network, podWant},
		{"pod/" + pods[0].Metadata.Name, pod + network, podWant},
		{"pod/" + pods[0].Metadata.Name + "/container/" + pyServ, pod + network, podWant},
		{"targetless", network, netWant},
	}
	for _, engine := range []string{"preload", "netstack"} {
		for _, tt := range targets {
			t.Run(engine+"/"+tt.target, func(t *testing.T) {
				start := time.Now()
				out, err := c.mirrord(t, 3*time.Minute, "exec", "--engine", engine, "-t", tt.target, "-n", fixtureNamespace, "--", "sh", "-c", tt.script)
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				for _, w := range tt.want {
					if !strings.Contains(out, w) {
						t.Errorf("output lacks %q:\n%s", w, out)
					}
				}
				t.Logf("%s: %v", tt.target, time.Since(start).Round(time.Millisecond))
			})
		}
	}
	// The agent job is removed at the end of each session.
	waitUntil(t, 30*time.Second, "agent jobs to be removed", func() bool { return len(c.agentJobs(t)) == 0 })
}

func TestExecErrors(t *testing.T) {
	c := newCluster(t)
	for _, tt := range []struct {
		target, want string
	}{
		{"deploy/no-such-app", `not found in namespace "default"`},
		{"pod/" + pyServ, "not found"},
	} {
		out, err := c.mirrord(t, time.Minute, "exec", "-t", tt.target, "-n", fixtureNamespace, "--", "true")
		if err == nil || !strings.Contains(out, tt.want) {
			t.Errorf("%s: %v\n%s", tt.target, err, out)
		}
	}
	out, err := c.mirrord(t, time.Minute, "exec", "-t", "deploy/"+pyServ, "-n", "no-such-namespace", "--", "true")
	if err == nil || !strings.Contains(out, "no-such-namespace") {
		t.Errorf("wrong namespace: %v\n%s", err, out)
	}
}

// TestKilledCLILeavesNoAgent: after kill -9 of the CLI, the agent pod goes
// away within seconds of its wait for the session to come back
// (agent.reconnect_timeout, here 3 s: it cannot tell a killed CLI from a
// dropped connection).
func TestKilledCLILeavesNoAgent(t *testing.T) {
	c := newCluster(t)
	cmd := exec.Command(buildMirrord(t), "exec", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage,
		"-t", "deploy/"+pyServ, "-n", fixtureNamespace, "--", "sh", "-c", "echo ready; exec sleep 600")
	cmd.Env = append(os.Environ(), "MIRRORD_AGENT_RECONNECT_TIMEOUT=3")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := stdout.Read(buf); err != nil {
		t.Fatal(err)
	}
	if len(c.agentJobs(t)) == 0 {
		t.Fatal("no agent job while the session runs")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	start := time.Now()
	waitUntil(t, 3*time.Second+20*time.Second, "the agent pod to be gone", func() bool {
		out := c.kubectl(t, "get", "pods", "-n", fixtureNamespace, "-l", "app=mirrord", "-o", "name")
		return strings.TrimSpace(out) == ""
	})
	t.Logf("agent pod gone %v after kill -9", time.Since(start).Round(time.Millisecond))
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestExecForbidden: a user whom RBAC allows nothing gets an error that
// says so and names the target, and no agent is started.
func TestExecForbidden(t *testing.T) {
	c := newCluster(t)
	kubeconfig := c.serviceAccountKubeconfig(t, "mirrord-e2e-noperm")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	jobsBefore := len(c.agentJobs(t))
	out, err := exec.CommandContext(ctx, buildMirrord(t), "exec", "--kubeconfig", kubeconfig, "--agent-image", agentImage,
		"-t", "deploy/"+pyServ, "-n", fixtureNamespace, "--", "true").CombinedOutput()
	if err == nil {
		t.Fatalf("mirrord exec succeeded without permissions:\n%s", out)
	}
	for _, want := range []string{"permission denied", pyServ} {
		if !strings.Contains(string(out), want) {
			t.Errorf("error lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "goroutine ") {
		t.Errorf("a stack trace instead of an error:\n%s", out)
	}
	if n := len(c.agentJobs(t)); n != jobsBefore {
		t.Errorf("agent jobs: %d before, %d after a refused session", jobsBefore, n)
	}
}

// serviceAccountKubeconfig creates a service account in the fixture's
// namespace (removed at the end) and returns a kubeconfig that acts as it.
func (c *cluster) serviceAccountKubeconfig(t *testing.T, sa string) string {
	t.Helper()
	c.apply(t, "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: "+sa+", namespace: "+fixtureNamespace+"}\n")
	t.Cleanup(func() {
		c.run(context.Background(), "delete", "serviceaccount", "-n", fixtureNamespace, sa, "--ignore-not-found")
	})
	token := strings.TrimSpace(c.kubectl(t, "create", "token", sa, "-n", fixtureNamespace, "--duration=10m"))
	server := c.kubectl(t, "config", "view", "--raw", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
	ca := c.kubectl(t, "config", "view", "--raw", "--minify", "-o", "jsonpath={.clusters[0].cluster.certificate-authority-data}")
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "`+server+`", certificate-authority-data: "`+ca+`"}}]
users: [{name: `+sa+`, user: {token: "`+token+`"}}]
contexts: [{name: `+sa+`, context: {cluster: e2e, user: `+sa+`}}]
current-context: `+sa+`
`), 0o600)
	return kubeconfig
}

// TestExecNoPortForward: a user who may start the agent but not
// port-forward to pods gets an error that says so at once (not at
// agent.startup_timeout), and the agent Job is removed.
func TestExecNoPortForward(t *testing.T) {
	c := newCluster(t)
	const sa = "mirrord-e2e-noportforward"
	c.apply(t, `apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: `+sa+`, namespace: `+fixtureNamespace+`}
rules:
- {apiGroups: [""], resources: [pods, pods/log], verbs: [get, list, watch]}
- {apiGroups: [apps], resources: [deployments, replicasets], verbs: [get, list, watch]}
- {apiGroups: [batch], resources: [jobs], verbs: [get, list, watch, create, delete]}
- {apiGroups: [""], resources: [secrets], verbs: [get, create, update, delete]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: `+sa+`, namespace: `+fixtureNamespace+`}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: `+sa+`}
subjects: [{kind: ServiceAccount, name: `+sa+`, namespace: `+fixtureNamespace+`}]
`)
	t.Cleanup(func() {
		c.run(context.Background(), "delete", "role,rolebinding", "-n", fixtureNamespace, sa, "--ignore-not-found")
	})
	kubeconfig := c.serviceAccountKubeconfig(t, sa)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, buildMirrord(t), "exec", "--kubeconfig", kubeconfig, "--agent-image", agentImage,
		"-t", "deploy/"+pyServ, "-n", fixtureNamespace, "--", "true").CombinedOutput()
	took := time.Since(start)
	if err == nil {
		t.Fatalf("mirrord exec succeeded without pods/portforward:\n%s", out)
	}
	if !strings.Contains(string(out), "portforward") {
		t.Errorf("error does not name pods/portforward:\n%s", out)
	}
	if took > 20*time.Second {
		t.Errorf("took %v to give up (agent.startup_timeout is 60 s; a refusal is final)", took.Round(time.Second))
	}
	job := regexp.MustCompile(`mirrord-agent-[0-9a-f]{10}`).FindString(string(out))
	if job == "" {
		t.Fatalf("error does not name the agent pod:\n%s", out)
	}
	waitUntil(t, 30*time.Second, "the agent job to be removed", func() bool {
		return !slices.Contains(c.agentJobs(t), "job.batch/"+job)
	})
}

// TestGoTestExec: `go test -exec 'mirrord exec -t deploy/py-serv --'` runs
// a Go package's test binary (netstack engine) in the pod's context; the
// same test fails without mirrord.
func TestGoTestExec(t *testing.T) {
	c := newCluster(t)
	bin := buildMirrord(t)
	goTest := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", append([]string{"test", "-count=1"}, args...)...)
		cmd.Dir = "testdata/kubepkg"
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	wrapper := strings.Join([]string{bin, "exec", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage,
		"-t", "deploy/" + pyServ, "-n", fixtureNamespace, "--"}, " ")
	out, err := goTest("-exec", wrapper, "-run", "TestInCluster", "-v", ".")
	if err != nil || !strings.Contains(out, "--- PASS: TestInCluster") {
		t.Fatalf("go test -exec mirrord: %v\n%s", err, out)
	}
	if out, err := goTest("-run", "TestInCluster", "."); err == nil {
		t.Fatalf("the test passed without mirrord:\n%s", out)
	}
}

// TestSessionsLeaveNothing: 100 sequential sessions that subscribe to the
// target's port (the program listens, so the agent sets its nftables
// redirect; mirror mode, so the pods' readiness probes still reach their
// app) leave nothing behind (waitNothingLeft), and the pods stay ready.
func TestSessionsLeaveNothing(t *testing.T) {
	c := newCluster(t)
	bin := buildMirrord(t)
	sessions := 100
	if testing.Short() {
		sessions = 5
	}
	listen := `import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 18080)); s.listen(); time.sleep(0.5)`
	start := time.Now()
	for i := range sessions {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := exec.CommandContext(ctx, bin, "exec", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage,
			"-t", "deploy/"+pyServ, "-n", fixtureNamespace, "-f", writeSoakConfig(t),
			"--", "python3", "-c", listen).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("session %d: %v\n%s", i+1, err, out)
		}
	}
	t.Logf("%d sessions in %v", sessions, time.Since(start).Round(time.Second))
	c.waitNothingLeft(t, 30*time.Second)
}

// waitNothingLeft waits up to d until no session has left anything in the
// fixture's namespace: no agent Job, pod or token Secret, no ephemeral
// agent container still running in a py-serv pod, and no nftables table of
// ours in a py-serv pod's network namespace (the table holds the redirects
// and the rule that keeps conntrack on); the py-serv pods are both ready.
func (c *cluster) waitNothingLeft(t *testing.T, d time.Duration) {
	t.Helper()
	var left []string
	waitUntil(t, d, "nothing of the sessions to be left", func() bool {
		left = strings.Fields(c.kubectl(t, "get", "jobs,pods,secrets", "-n", fixtureNamespace, "-l", "app=mirrord", "-o", "name"))
		return len(left) == 0
	})
	waitUntil(t, 2*time.Minute, "both py-serv pods to be ready", func() bool { return len(c.fixturePods(t, pyServ)) == 2 })
	for _, p := range c.fixturePods(t, pyServ) {
		if tables := ourTables(t, p.Metadata.Name); len(tables) != 0 {
			t.Errorf("pod %s still has nftables tables %v", p.Metadata.Name, tables)
		}
		for name, state := range c.ephemeralAgents(t, fixtureNamespace, p.Metadata.Name) {
			if state != "terminated" {
				t.Errorf("pod %s still has the ephemeral agent container %s %s", p.Metadata.Name, name, state)
			}
		}
	}
}

// writeSoakConfig maps the program's port 18080 to the target's port 80.
func writeSoakConfig(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "mirrord-e2e-soak.json")
	os.WriteFile(p, []byte(`{"feature": {"network": {"incoming": {"port_mapping": [[18080, 80]]}}}}`), 0o644)
	return p
}

// ourTables lists the mirrord agent's nftables tables in the network
// namespace of the pod named podName (found through its process's
// POD_NAME; the cluster runs on this machine).
func ourTables(t *testing.T, podName string) []string {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, env := range procs {
		b, err := os.ReadFile(env)
		if err != nil || !strings.Contains("\x00"+string(b), "\x00POD_NAME="+podName+"\x00") {
			continue
		}
		h, err := os.Open(filepath.Join(filepath.Dir(env), "ns", "net"))
		if err != nil {
			continue
		}
		defer h.Close()
		conn, err := nftables.New(nftables.WithNetNSFd(int(h.Fd())))
		if err != nil {
			t.Fatal(err)
		}
		tables, err := conn.ListTables()
		if err != nil {
			t.Fatal(err)
		}
		var ours []string
		for _, tb := range tables {
			if strings.HasPrefix(tb.Name, "mirrord_agent_") {
				ours = append(ours, tb.Name)
			}
		}
		return ours
	}
	t.Fatalf("no process of pod %s on this machine", podName)
	return nil
}

// TestAgentNotReachableFromCluster: the agent, privileged and next to the
// target, listens on its pod's loopback only: the session reaches it
// through the port-forward, while a connection to the agent pod's IP from
// another pod or the node is refused.
func TestAgentNotReachableFromCluster(t *testing.T) {
	c := newCluster(t)
	cmd := exec.Command(buildMirrord(t), "exec", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage,
		"-t", "deploy/"+pyServ, "-n", fixtureNamespace, "--", "sh", "-c", "echo ready; exec sleep 600")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	buf := make([]byte, 6)
	if _, err := stdout.Read(buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("the session did not start: %q, %v", buf, err)
	}
	var ip string
	waitUntil(t, 20*time.Second, "the agent pod's IP", func() bool {
		ip = strings.TrimSpace(c.kubectl(t, "get", "pods", "-n", fixtureNamespace, "-l", "app=mirrord", "-o", "jsonpath={.items[0].status.podIP}"))
		return ip != ""
	})
	// From the node (this machine). A refusal, not a timeout: the pod's
	// IP is reached, and nothing listens on it.
	port := strconv.Itoa(kube.AgentPort)
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip, port), 3*time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("the agent answers on its pod IP %s: any pod of the cluster can reach it", ip)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial %s from the node: %v, want connection refused (the pod reached, no listener)", net.JoinHostPort(ip, port), err)
	}
	// From a pod: the target's own, on the agent's node.
	target := strings.TrimSpace(c.kubectl(t, "get", "pods", "-n", fixtureNamespace, "-l", "app="+pyServ, "-o", "jsonpath={.items[0].metadata.name}"))
	// testapp get fails, printing why on stderr.
	_, gerr := c.run(t.Context(), "exec", "-n", fixtureNamespace, target, "--", "/testapp", "get", "http://"+net.JoinHostPort(ip, port)+"/")
	got := fmt.Sprint(gerr)
	if !strings.Contains(got, "connection refused") {
		t.Errorf("GET %s from pod %s: %s, want connection refused", net.JoinHostPort(ip, port), target, got)
	}
	t.Logf("agent pod %s: %v from the node; from pod %s: %s (the session runs through the port-forward)", ip, err, target, strings.TrimSpace(got))
}

// TestJoinNeedsSecretAccess: the agent's session token is in a Secret, not
// in its Job. A user who may read Jobs and pods, port-forward and create
// Jobs, but not read Secrets, cannot join a running shared agent (nor
// start one): one clear error naming secrets, and the agent keeps serving
// its session. The Secret goes with the agent.
func TestJoinNeedsSecretAccess(t *testing.T) {
	c := newCluster(t)
	const sa = "mirrord-e2e-nosecrets"
	c.apply(t, `apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: `+sa+`, namespace: `+fixtureNamespace+`}
rules:
- {apiGroups: [""], resources: [pods, pods/log], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [pods/portforward], verbs: [create, get]}
- {apiGroups: [apps], resources: [deployments, replicasets], verbs: [get, list, watch]}
- {apiGroups: [batch], resources: [jobs], verbs: [get, list, watch, create, delete]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: `+sa+`, namespace: `+fixtureNamespace+`}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: `+sa+`}
subjects: [{kind: ServiceAccount, name: `+sa+`, namespace: `+fixtureNamespace+`}]
`)
	t.Cleanup(func() {
		c.run(context.Background(), "delete", "role,rolebinding", "-n", fixtureNamespace, sa, "--ignore-not-found")
	})
	waitUntil(t, time.Minute, "agent jobs from before to be gone", func() bool { return len(c.agentJobs(t)) == 0 })
	p := c.fixturePods(t, pyServ)[0]
	target := "pod/" + p.Metadata.Name
	// The owner's session: a steal of port 80.
	out := c.startLocalApp(t, "preload", target, 18185, "owner's app",
		`{"feature": {"network": {"incoming": {"mode": "steal", "port_mapping": [[18185, 80]]}}}}`)
	waitUntil(t, 2*time.Minute, "the owner's steal", func() bool {
		body, _ := podGet(p.Status.PodIP, "/", nil)
		return body == "owner's app"
	})
	jobs := c.agentJobs(t)
	if len(jobs) != 1 {
		t.Fatalf("agent jobs %v; want one", jobs)
	}
	job := strings.TrimPrefix(jobs[0], "job.batch/")
	if env := c.kubectl(t, "get", "job", "-n", fixtureNamespace, job, "-o", "jsonpath={.spec.template.spec.containers[0].env}"); !strings.Contains(env, "secretKeyRef") {
		t.Errorf("the Job's env does not take the token from a Secret: %s", env)
	}
	if owner := c.kubectl(t, "get", "secret", "-n", fixtureNamespace, job, "-o", "jsonpath={.metadata.ownerReferences[0].name}"); owner != job {
		t.Errorf("the token Secret is owned by %q, want the Job %s", owner, job)
	}

	// The same target and settings: the other user would join that agent.
	kubeconfig := c.serviceAccountKubeconfig(t, sa)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := exec.CommandContext(ctx, buildMirrord(t), "exec", "--kubeconfig", kubeconfig, "--agent-image", agentImage,
		"-t", target, "-n", fixtureNamespace, "--", "true").CombinedOutput()
	if err == nil {
		t.Fatalf("a user who may not read secrets joined the agent:\n%s", got)
	}
	if !strings.Contains(string(got), "secrets") {
		t.Errorf("the error does not name secrets:\n%s", got)
	}
	if body, _ := podGet(p.Status.PodIP, "/", nil); body != "owner's app" {
		t.Errorf("after the refused join, the owner's steal answered %q\n%s", body, readFile(out))
	}
	if now := c.agentJobs(t); len(now) != 1 || now[0] != jobs[0] {
		t.Errorf("agent jobs after the refused join: %v, want %v", now, jobs)
	}
}
