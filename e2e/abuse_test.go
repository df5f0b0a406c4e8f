//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mirrord-go/mirrord/integration/abuse"
)

// abuseApp is the target of TestIncomingAbuse: the test app as the
// abuse tests' target app, on port 8900.
const abuseApp = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: abuse, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: abuse}}
  template:
    metadata: {labels: {app: abuse}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: app
          image: %[2]s
          imagePullPolicy: Never
          args: [abuse-origin]
          env: [{name: PORT, value: "8900"}]
          readinessProbe:
            tcpSocket: {port: 8900}
            periodSeconds: 1
`

// TestIncomingAbuse runs the attacks of package abuse (slowloris with
// 10,000 connections, 1 GiB bodies, 64 KiB and 10 MiB request heads, the
// HTTP/2 rapid reset, clients that never read) against a port stolen with
// an HTTP filter through a real agent pod, limited to its default 100 MiB:
// while each runs, matched requests reach the local app and unmatched ones
// the target's app, within 5 s, and the agent's memory stays within the
// bounds README states; afterwards the agent is the same process, never
// restarted or killed for memory. The attacks come from this machine (the
// node) straight to the pod's IP. The hermetic TestIncomingAbuse runs the
// same attacks against an agent next to a fake pod.
func TestIncomingAbuse(t *testing.T) {
	c := newCluster(t)
	// The agent's process is sampled from /proc: on the processes
	// cluster it runs on this machine.
	c.requireProcessesCluster(t)
	abuse.RaiseNoFile(t, 65536)
	ns := c.namespace(t, "mirrord-abuse")
	c.apply(t, fmt.Sprintf(abuseApp, ns, testappImage))
	target := c.soleReadyPod(t, ns, "app=abuse")
	cfg := `{"feature": {"network": {"incoming": {"mode": "steal",
		"http_filter": {"header_filter": "^x-user: me$", "ports": [8900]}}}}}`
	// Node's own limit on a request head is 16 KiB; the local app takes
	// what the target's (Go) app takes.
	out := c.startLocalIn(t, ns, "preload", "deploy/abuse", cfg,
		"node", "--max-http-header-size=1100000", "../integration/testdata/echoserver.js", "8900", "local")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mirrord exec and the local app said:\n%s", readFile(out))
		}
	})
	tg := abuse.Target{Addr: target.Status.PodIP + ":8900", Within: func(fn func()) { fn() }}
	waitUntil(t, 2*time.Minute, "the filtered steal", func() bool { return abuse.Ready(tg) })

	agentPod := strings.TrimSpace(c.kubectl(t, "get", "pods", "-n", ns, "-l", "app=mirrord", "-o", "jsonpath={.items[0].metadata.name}"))
	containerID := func() string {
		id := c.kubectl(t, "get", "pod", "-n", ns, agentPod, "-o", "jsonpath={.status.containerStatuses[0].containerID}")
		return strings.TrimPrefix(strings.TrimSpace(id), "containerd://")
	}
	// The session may reach the agent before the kubelet reports its
	// container (and so its ID) running.
	var id string
	waitUntil(t, time.Minute, "the agent's container ID", func() bool { id = containerID(); return id != "" })
	tg.AgentPID = containerPID(t, id)
	if comm, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(tg.AgentPID), "comm")); strings.TrimSpace(string(comm)) != "mirrord" {
		t.Fatalf("the agent container's process %d is %q, not mirrord", tg.AgentPID, comm)
	}
	t.Logf("agent pod %s: container %.12s, pid %d; memory limit %s", agentPod, id, tg.AgentPID,
		c.kubectl(t, "get", "pod", "-n", ns, agentPod, "-o", "jsonpath={.spec.containers[0].resources.limits.memory}"))

	abuse.Run(t, tg)

	// The same agent, still running: not restarted, not OOM-killed.
	if got := containerID(); got != id {
		t.Errorf("the agent's container is %.12s after the attacks, %.12s before", got, id)
	}
	if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(tg.AgentPID))); err != nil {
		t.Errorf("the agent's process %d is gone: %v", tg.AgentPID, err)
	}
	if r := c.kubectl(t, "get", "pod", "-n", ns, agentPod, "-o", "jsonpath={.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.reason}"); strings.TrimSpace(r) != "0" {
		t.Errorf("the agent's container: restarts and last end %q", r)
	}
}

// containerPID is the pid, on this machine, of the main process of the
// container id: the process whose cgroup names the container and whose
// parent is not in it (the runtime's shim is not in the container's
// cgroup).
func containerPID(t *testing.T, id string) int {
	t.Helper()
	if id == "" {
		t.Fatal("containerPID: no container ID")
	}
	inContainer := func(pid string) bool {
		b, err := os.ReadFile(filepath.Join("/proc", pid, "cgroup"))
		return err == nil && strings.Contains(string(b), id)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !inContainer(e.Name()) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after
		// its closing parenthesis.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) > 1 && !inContainer(fields[1]) {
			return pid
		}
	}
	t.Fatalf("no process of container %.12s on this machine", id)
	return 0
}
