//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The fixture the harness deploys (e2e/cluster/manifests/testapp.yaml).
const (
	fixtureNamespace = "default"
	pyServ           = "py-serv"
	backend          = "backend"
	k8sVersion       = "v1.33.13"
	busyboxImage     = "ghcr.io/mirrord-go/e2e-busybox:e2e"
	testappImage     = "ghcr.io/mirrord-go/e2e-testapp:e2e"
	agentImage       = "ghcr.io/mirrord-go/mirrord:e2e"
)

// cluster is how a test reaches the e2e cluster: kubectl with the harness's
// kubeconfig. Exec'ing kubectl keeps the root module free of test-only
// dependencies and exercises what users run.
type cluster struct {
	kubectlBin, kubeconfig string
	layout
}

// layout is what differs between the harness's two kinds of cluster
// (E2E_CLUSTER, set by e2e/run.sh; see e2e/cluster/kind.sh for kind's).
type layout struct {
	kind  string   // "processes" or "kind"
	nodes []string // the control plane first
	// podCIDR and dnsIP are the pod range and the cluster DNS Service's address.
	podCIDR, dnsIP string
	// nodeCIDR is the network of the kind node containers on this machine;
	// "" for the processes cluster, whose node IP is the machine's own.
	nodeCIDR string
}

var layouts = map[string]layout{
	"processes": {kind: "processes", nodes: []string{"mirrord-e2e"}, podCIDR: "10.244.0.0/16", dnsIP: "10.96.0.10"},
	"kind": {kind: "kind", nodes: []string{"mirrord-e2e-control-plane", "mirrord-e2e-worker"},
		podCIDR: "10.245.0.0/16", dnsIP: "10.97.0.10", nodeCIDR: "10.246.0.0/24"},
}

// requireNodes skips a test that needs n nodes on a cluster with fewer.
func (c *cluster) requireNodes(t *testing.T, n int) {
	t.Helper()
	if len(c.nodes) < n {
		t.Skipf("needs a cluster with %d nodes; the %s cluster has %d (run it on kind: E2E_CLUSTER=kind make e2e)", n, c.kind, len(c.nodes))
	}
}

// requireProcessesCluster skips a test that drives the processes cluster's
// own processes (its API server, its containerd).
func (c *cluster) requireProcessesCluster(t *testing.T) {
	t.Helper()
	if c.kind != "processes" {
		t.Skipf("drives the processes cluster's own components; this is the %s cluster", c.kind)
	}
}

func cacheDir() string {
	dir := os.Getenv("XDG_CACHE_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache")
	}
	return filepath.Join(dir, "mirrord-e2e")
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{kubectlBin: os.Getenv("E2E_KUBECTL"), kubeconfig: os.Getenv("E2E_KUBECONFIG")}
	kind := os.Getenv("E2E_CLUSTER")
	if kind == "" {
		kind = "processes"
	}
	l, ok := layouts[kind]
	if !ok {
		t.Fatalf("E2E_CLUSTER=%s: want processes or kind", kind)
	}
	c.layout = l
	if c.kubeconfig == "" {
		name := "kubeconfig"
		if kind == "kind" {
			name = "kind-kubeconfig"
		}
		c.kubeconfig = filepath.Join(cacheDir(), name)
	}
	if c.kubectlBin == "" {
		c.kubectlBin = filepath.Join(cacheDir(), "k8s-"+k8sVersion, "bin", "kubectl")
	}
	for _, f := range []string{c.kubeconfig, c.kubectlBin} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("no e2e cluster: %v (run `make e2e-cluster`, or `make e2e`)", err)
		}
	}
	return c
}

// run runs kubectl and returns its stdout; the error carries stderr.
func (c *cluster) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.kubectlBin, append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// kubectl runs kubectl with a one-minute limit and fails the test on error.
func (c *cluster) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.run(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// apply creates or updates objects from a YAML document.
func (c *cluster) apply(t *testing.T, manifest string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.kubectlBin, "--kubeconfig", c.kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v: %s\n%s", err, out, manifest)
	}
}

// getJSON runs `kubectl get ... -o json` into v.
func (c *cluster) getJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	out := c.kubectl(t, append(append([]string{"get"}, args...), "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("kubectl get %v: %v", args, err)
	}
}

// exec runs a command in a pod's container and returns its stdout.
func (c *cluster) exec(t *testing.T, ns, pod, container string, command ...string) string {
	t.Helper()
	args := []string{"exec", "-n", ns, pod}
	if container != "" {
		args = append(args, "-c", container)
	}
	return c.kubectl(t, append(append(args, "--"), command...)...)
}

// namespace creates a namespace for one test and deletes it (waiting for its
// pods to go) when the test ends.
func (c *cluster) namespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := prefix + "-" + randomSuffix()
	c.kubectl(t, "create", "namespace", ns)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := c.run(ctx, "delete", "namespace", ns, "--wait=true"); err != nil {
			t.Errorf("deleting namespace %s: %v", ns, err)
		}
	})
	// Pods cannot start before the namespace's default service account exists.
	eventually(t, 30*time.Second, func() error {
		_, err := c.run(context.Background(), "get", "serviceaccount", "-n", ns, "default")
		return err
	})
	return ns
}

// waitReady waits until a pod is Ready.
func (c *cluster) waitReady(t *testing.T, ns, pod string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := c.run(ctx, "wait", "-n", ns, "--for=condition=Ready", "--timeout=90s", "pod/"+pod); err != nil {
		describe, _ := c.run(context.Background(), "describe", "-n", ns, "pod/"+pod)
		t.Fatalf("%v\n%s", err, describe)
	}
}

type podList struct {
	Items []pod `json:"items"`
}

type pod struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Phase  string `json:"phase"`
		PodIP  string `json:"podIP"`
		PodIPs []struct {
			IP string `json:"ip"`
		} `json:"podIPs"`
		Conditions []struct {
			Type   string `json:"type"`
			Status string `json:"status"`
		} `json:"conditions"`
		EphemeralContainerStatuses []containerStatus `json:"ephemeralContainerStatuses"`
	} `json:"status"`
}

type containerStatus struct {
	Name  string `json:"name"`
	State struct {
		Terminated *struct {
			ExitCode int `json:"exitCode"`
		} `json:"terminated"`
	} `json:"state"`
}

// ipv6 is the pod's IPv6 address on a dual-stack cluster, or "".
func (p pod) ipv6() string {
	for _, a := range p.Status.PodIPs {
		if strings.Contains(a.IP, ":") {
			return a.IP
		}
	}
	return ""
}

func (p pod) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

// fixturePods returns the Ready pods of a fixture Deployment.
func (c *cluster) fixturePods(t *testing.T, app string) []pod {
	t.Helper()
	return c.fixturePodsIn(t, fixtureNamespace, "app="+app)
}

// soleReadyPod waits up to 2 minutes for ns to have exactly one Ready pod
// that matches selector, and returns it.
func (c *cluster) soleReadyPod(t *testing.T, ns, selector string) pod {
	t.Helper()
	var p pod
	waitUntil(t, 2*time.Minute, "one ready pod "+selector+" in "+ns, func() bool {
		pods := c.fixturePodsIn(t, ns, selector)
		if len(pods) == 1 {
			p = pods[0]
		}
		return len(pods) == 1
	})
	return p
}

// fixturePodsIn returns the Ready pods in ns that match a label selector.
func (c *cluster) fixturePodsIn(t *testing.T, ns, selector string) []pod {
	t.Helper()
	var list podList
	c.getJSON(t, &list, "pods", "-n", ns, "-l", selector, "--field-selector=status.phase=Running")
	var ready []pod
	for _, p := range list.Items {
		if p.ready() {
			ready = append(ready, p)
		}
	}
	return ready
}

// serviceIP returns a Service's ClusterIP.
func (c *cluster) serviceIP(t *testing.T, ns, name string) string {
	t.Helper()
	ip := c.kubectl(t, "get", "service", "-n", ns, name, "-o", "jsonpath={.spec.clusterIP}")
	if ip == "" || ip == "None" {
		t.Fatalf("service %s/%s has no ClusterIP", ns, name)
	}
	return ip
}

// eventually retries f every half second until it succeeds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %v: %v", timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func randomSuffix() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}
