//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSmoke proves that the cluster the harness made is a real one, with
// everything mirrord relies on: pods with their own IPs, Service routing,
// cluster DNS, logs, port-forward through the API server, a privileged
// hostPID pod that can see and enter another pod's namespaces (how the agent
// works) and ephemeral containers (agent.ephemeral).
func TestSmoke(t *testing.T) {
	c := newCluster(t)
	ns := c.namespace(t, "e2e-smoke")
	c.apply(t, fmt.Sprintf(clientPod, ns, busyboxImage))

	t.Run("nodes", func(t *testing.T) {
		for _, nodeName := range c.nodes {
			var node struct {
				Status struct {
					NodeInfo struct {
						KubeletVersion          string `json:"kubeletVersion"`
						ContainerRuntimeVersion string `json:"containerRuntimeVersion"`
					} `json:"nodeInfo"`
					Conditions []struct{ Type, Status string } `json:"conditions"`
				} `json:"status"`
			}
			c.getJSON(t, &node, "node", nodeName)
			ready := false
			for _, cond := range node.Status.Conditions {
				ready = ready || cond.Type == "Ready" && cond.Status == "True"
			}
			if !ready || node.Status.NodeInfo.KubeletVersion != k8sVersion {
				t.Fatalf("node %s: ready=%v kubelet %q, want Ready and %s", nodeName, ready, node.Status.NodeInfo.KubeletVersion, k8sVersion)
			}
			t.Logf("node %s Ready, kubelet %s, runtime %s", nodeName, node.Status.NodeInfo.KubeletVersion, node.Status.NodeInfo.ContainerRuntimeVersion)
		}
	})

	// An earlier test may have stolen port 80, readiness probes included:
	// the pods are ready again within seconds.
	waitUntil(t, time.Minute, "both "+pyServ+" pods to be ready", func() bool { return len(c.fixturePods(t, pyServ)) == 2 })
	pods := c.fixturePods(t, pyServ)
	t.Run("pod IPs", func(t *testing.T) {
		if len(pods) != 2 {
			t.Fatalf("want 2 Ready %s pods, got %d", pyServ, len(pods))
		}
		_, podNet, _ := net.ParseCIDR(c.podCIDR)
		seen := map[string]bool{}
		for _, p := range pods {
			ip := net.ParseIP(p.Status.PodIP)
			if ip == nil || !podNet.Contains(ip) || seen[p.Status.PodIP] {
				t.Errorf("pod %s: IP %q is not a distinct address in %s", p.Metadata.Name, p.Status.PodIP, podNet)
			}
			seen[p.Status.PodIP] = true
		}
	})
	if len(pods) == 0 {
		t.Fatalf("no Ready %s pods: the fixture is not deployed", pyServ)
	}
	c.waitReady(t, ns, "client")
	wget := func(url string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// Not wget's -T: Debian's static busybox 1.35 crashes with it.
		return c.run(ctx, "exec", "-n", ns, "client", "--", "timeout", "5", "wget", "-qO-", url)
	}

	t.Run("ClusterIP service", func(t *testing.T) {
		ip := c.serviceIP(t, fixtureNamespace, pyServ)
		// kube-proxy spreads connections over both replicas: see them both.
		want := map[string]bool{}
		for _, p := range pods {
			want[p.Metadata.Name] = true
		}
		seen := map[string]bool{}
		for i := 0; i < 40 && len(seen) < len(want); i++ {
			out, err := wget("http://" + ip + "/")
			if err != nil {
				t.Fatal(err)
			}
			var answer struct{ Service, Hostname string }
			if err := json.Unmarshal([]byte(out), &answer); err != nil || answer.Service != pyServ {
				t.Fatalf("GET http://%s/: %q (%v), want the %s answer", ip, out, err, pyServ)
			}
			seen[answer.Hostname] = true
		}
		for name := range want {
			if !seen[name] {
				t.Errorf("no answer from replica %s through ClusterIP %s (saw %v)", name, ip, seen)
			}
		}
		// The second service is ClusterIP only, and reachable from pods.
		out, err := wget("http://" + c.serviceIP(t, fixtureNamespace, backend) + ":8080/")
		if err != nil || !strings.Contains(out, `"service": "backend"`) {
			t.Errorf("backend through its ClusterIP: %q, %v", out, err)
		}
	})

	t.Run("cluster DNS", func(t *testing.T) {
		resolv := c.exec(t, ns, "client", "", "cat", "/etc/resolv.conf")
		if !strings.Contains(resolv, "nameserver "+c.dnsIP) || !strings.Contains(resolv, ns+".svc.cluster.local") {
			t.Errorf("pod resolv.conf does not point at cluster DNS:\n%s", resolv)
		}
		ip := c.serviceIP(t, fixtureNamespace, pyServ)
		out := c.exec(t, ns, "client", "", "nslookup", "py-serv.default.svc.cluster.local")
		if !strings.Contains(out, ip) {
			t.Errorf("nslookup py-serv.default.svc.cluster.local: want %s in\n%s", ip, out)
		}
		// A short name through the search path, from another namespace.
		if out, err := wget("http://py-serv.default/hostname"); err != nil || strings.TrimSpace(out) == "" {
			t.Errorf("GET http://py-serv.default/hostname: %q, %v", out, err)
		}
		// The test app resolves and calls the backend by its short name.
		app := pods[0].Metadata.Name
		backendIP := c.serviceIP(t, fixtureNamespace, backend)
		if out := c.exec(t, fixtureNamespace, app, pyServ, "/testapp", "lookup", "backend"); strings.TrimSpace(out) != backendIP {
			t.Errorf("lookup backend in %s: %q, want %s", app, out, backendIP)
		}
		var call struct {
			Via     string
			Backend struct{ Service string }
		}
		out = c.exec(t, fixtureNamespace, app, pyServ, "/testapp", "get", "http://127.0.0.1/call")
		if err := json.Unmarshal([]byte(out), &call); err != nil || call.Backend.Service != backend || call.Via != app {
			t.Errorf("py-serv /call: %q (%v)", out, err)
		}
	})

	t.Run("kubectl logs", func(t *testing.T) {
		target := pods[0]
		token := "smoke-" + randomSuffix()
		if _, err := wget("http://" + target.Status.PodIP + "/?probe=" + token); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, func() error {
			logs := c.kubectl(t, "logs", "-n", fixtureNamespace, target.Metadata.Name)
			if !strings.Contains(logs, "py-serv: listening on :80") || !strings.Contains(logs, "probe="+token) {
				return fmt.Errorf("logs of %s lack the start line or the probe %s:\n%s", target.Metadata.Name, token, logs)
			}
			return nil
		})
	})

	t.Run("port-forward", func(t *testing.T) {
		port := c.portForward(t, fixtureNamespace, "deploy/"+pyServ, 80)
		base := "http://127.0.0.1:" + port
		var root struct{ Service, Hostname string }
		getJSON(t, base+"/", &root)
		if root.Service != pyServ {
			t.Errorf("GET / through port-forward: service %q", root.Service)
		}
		var env map[string]string
		getJSON(t, base+"/env", &env)
		if env["MIRRORD_E2E_FIXTURE"] != pyServ || env["APP_GREETING"] != "hello from py-serv" || env["POD_NAME"] != root.Hostname {
			t.Errorf("GET /env: fixture env missing: %v", env)
		}
		want, err := os.ReadFile("testapp/config.json")
		if err != nil {
			t.Fatal(err)
		}
		if got := getBody(t, base+"/file"); got != string(want) {
			t.Errorf("GET /file: %q, want the image's /app/config.json %q", got, want)
		}
	})

	t.Run("NodePort", func(t *testing.T) {
		// Each node IP (one per family on a dual-stack node) stays on this
		// machine (nodeIPs checks). The NodePort answers on the IPv4 ones:
		// py-serv's Service is IPv4 (a dual-stack cluster gives a Service
		// IPv6 only when it asks).
		for _, nodeName := range c.nodes {
			for _, nodeIP := range c.nodeIPs(t, nodeName) {
				if strings.Contains(nodeIP, ":") {
					continue
				}
				if got := getBody(t, "http://"+net.JoinHostPort(nodeIP, "30080")+"/health"); strings.TrimSpace(got) != "ok" {
					t.Errorf("NodePort 30080 on %s (%s): %q", nodeName, nodeIP, got)
				}
			}
		}
	})

	t.Run("hostPID privileged pod enters the app's namespaces", func(t *testing.T) {
		target := pods[0]
		// On the target's node: hostPID shows that node's processes only.
		c.apply(t, fmt.Sprintf(hostPIDPod, ns, target.Spec.NodeName, busyboxImage))
		c.waitReady(t, ns, "hostpid")
		// Find the app's process among all of the node's processes by the
		// POD_NAME its container was started with (and its command: a local
		// process that mirrord gave the pod's environment has it too).
		find := `for p in /proc/[0-9]*; do
			tr '\0' '\n' <$p/environ 2>/dev/null | grep -qx "POD_NAME=$1" &&
			[ "$(tr '\0' ' ' <$p/cmdline)" = "/testapp serve " ] && echo ${p#/proc/}
		done; true`
		pid := strings.TrimSpace(c.exec(t, ns, "hostpid", "", "sh", "-c", find, "sh", target.Metadata.Name))
		if pid == "" || strings.Contains(pid, "\n") {
			t.Fatalf("want exactly one process of pod %s, found %q", target.Metadata.Name, pid)
		}
		cmdline := c.exec(t, ns, "hostpid", "", "sh", "-c", `tr '\0' ' ' </proc/$1/cmdline`, "sh", pid)
		if !strings.HasPrefix(cmdline, "/testapp serve") {
			t.Errorf("pid %s runs %q, want /testapp serve", pid, cmdline)
		}
		addrs := c.exec(t, ns, "hostpid", "", "nsenter", "-t", pid, "-n", "ip", "-4", "-o", "addr", "show", "dev", "eth0")
		if !strings.Contains(addrs, " "+target.Status.PodIP+"/") {
			t.Errorf("eth0 in pid %s's netns: %q, want %s", pid, addrs, target.Status.PodIP)
		}
		// The app's loopback is only reachable from inside its netns.
		host := c.exec(t, ns, "hostpid", "", "nsenter", "-t", pid, "-n", "timeout", "5", "wget", "-qO-", "http://127.0.0.1:80/hostname")
		if strings.TrimSpace(host) != target.Metadata.Name {
			t.Errorf("127.0.0.1:80 in pid %s's netns answered %q, want %s", pid, host, target.Metadata.Name)
		}
		// Its files, through /proc/PID/root (how the agent reads them).
		want, _ := os.ReadFile("testapp/config.json")
		if got := c.exec(t, ns, "hostpid", "", "cat", "/proc/"+pid+"/root/app/config.json"); got != string(want) {
			t.Errorf("/proc/%s/root/app/config.json: %q", pid, got)
		}
	})

	t.Run("ephemeral container", func(t *testing.T) {
		c.apply(t, fmt.Sprintf(targetPod, ns, testappImage))
		c.waitReady(t, ns, "target")
		c.kubectl(t, "debug", "-n", ns, "target", "--image="+busyboxImage, "--image-pull-policy=Never",
			"--target=app", "--container=debugger", "--profile=general", "--",
			"sh", "-c", `tr '\0' ' ' </proc/1/cmdline; echo; timeout 5 wget -qO- http://127.0.0.1:8080/hostname`)
		var exit int
		eventually(t, time.Minute, func() error {
			var p pod
			c.getJSON(t, &p, "pod", "-n", ns, "target")
			for _, s := range p.Status.EphemeralContainerStatuses {
				if s.Name == "debugger" && s.State.Terminated != nil {
					exit = s.State.Terminated.ExitCode
					return nil
				}
			}
			return fmt.Errorf("ephemeral container debugger has not finished: %+v", p.Status.EphemeralContainerStatuses)
		})
		logs := c.kubectl(t, "logs", "-n", ns, "target", "-c", "debugger")
		// Sharing the target's PID namespace, PID 1 is the app; sharing its
		// network namespace, its loopback port answers.
		if exit != 0 || !strings.HasPrefix(logs, "/testapp serve") || !strings.Contains(logs, "\ntarget\n") {
			t.Errorf("ephemeral container exited %d with output:\n%s", exit, logs)
		}
	})

	t.Run("agent image", func(t *testing.T) {
		// The agent image is imported, and its binary is the project's
		// mirrord: `mirrord agent --help` runs in a pod.
		c.apply(t, fmt.Sprintf(agentPod, ns, agentImage))
		eventually(t, time.Minute, func() error {
			var p pod
			c.getJSON(t, &p, "pod", "-n", ns, "agent-help")
			if p.Status.Phase != "Succeeded" {
				return fmt.Errorf("agent-help pod is %s", p.Status.Phase)
			}
			return nil
		})
		if logs := c.kubectl(t, "logs", "-n", ns, "agent-help"); !strings.Contains(strings.ToLower(logs), "agent") {
			t.Errorf("mirrord agent --help printed:\n%s", logs)
		}
	})
}

const clientPod = `
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: %s}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - {name: client, image: %s, imagePullPolicy: Never, command: [sleep, "3600"]}
`

const hostPIDPod = `
apiVersion: v1
kind: Pod
metadata: {name: hostpid, namespace: %s}
spec:
  nodeName: %s
  hostPID: true
  terminationGracePeriodSeconds: 0
  containers:
    - name: debug
      image: %s
      imagePullPolicy: Never
      command: [sleep, "3600"]
      securityContext: {privileged: true}
`

const targetPod = `
apiVersion: v1
kind: Pod
metadata: {name: target, namespace: %s}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: app
      image: %s
      imagePullPolicy: Never
      args: [serve]
      env:
        - {name: PORT, value: "8080"}
        - {name: SERVICE_NAME, value: target}
      readinessProbe:
        httpGet: {path: /health, port: 8080}
        periodSeconds: 1
`

const agentPod = `
apiVersion: v1
kind: Pod
metadata: {name: agent-help, namespace: %s}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
    - {name: agent, image: %s, imagePullPolicy: Never, args: ["--help"]}
`

// portForward runs `kubectl port-forward` to 127.0.0.1 on a free port for
// the rest of the test and returns that port.
func (c *cluster) portForward(t *testing.T, ns, target string, remotePort int) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, c.kubectlBin, "--kubeconfig", c.kubeconfig, "port-forward",
		"-n", ns, "--address", "127.0.0.1", target, fmt.Sprintf(":%d", remotePort))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	ports := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) ->`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				ports <- m[1]
				break
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case p := <-ports:
		return p
	case <-time.After(30 * time.Second):
		t.Fatalf("kubectl port-forward did not start: %s", stderr.String())
		return ""
	}
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v: %s", url, resp.Status, err, body)
	}
	return string(body)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	body := getBody(t, url)
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, body)
	}
}

// nodeIPs returns a node's InternalIPs (one per family on a dual-stack
// node) after checking that traffic to them stays on this machine (the e2e
// traffic rule): the processes cluster's node IPs are the machine's own
// addresses, a kind node's is in the harness's node network, a bridge on
// this machine.
func (c *cluster) nodeIPs(t *testing.T, nodeName string) []string {
	t.Helper()
	ips := strings.Fields(c.kubectl(t, "get", "node", nodeName, "-o", `jsonpath={.status.addresses[?(@.type=="InternalIP")].address}`))
	if len(ips) == 0 {
		t.Fatalf("node %s has no InternalIP", nodeName)
	}
	_, nodeNet, _ := net.ParseCIDR(c.nodeCIDR)
	for _, ip := range ips {
		if c.nodeCIDR == "" && !isLocalAddress(ip) {
			t.Fatalf("node %s: IP %q is not an address of this machine", nodeName, ip)
		}
		if p := net.ParseIP(ip); c.nodeCIDR != "" && (p == nil || !nodeNet.Contains(p)) {
			t.Fatalf("node %s: IP %q is not in the kind node network %s", nodeName, ip, c.nodeCIDR)
		}
	}
	return ips
}

// isLocalAddress reports whether ip is assigned to this machine, so that
// connecting to it stays on the machine (the e2e traffic rule).
func isLocalAddress(ip string) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.String() == ip {
			return true
		}
	}
	return false
}
