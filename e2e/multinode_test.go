//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTwoNodes covers what only a cluster with more than one node shows
// (E2E_CLUSTER=kind: a control-plane and a worker node, with one py-serv
// replica on each): the agent must be scheduled on its target's node, a
// Service's endpoints sit on both nodes, listing targets spans the nodes,
// and a session whose target's node is drained ends cleanly (pod/) or
// follows its workload to the other node (deploy/). It skips on
// the single-node processes cluster.
func TestTwoNodes(t *testing.T) {
	c := newCluster(t)
	c.requireNodes(t, 2)
	waitUntil(t, time.Minute, "both "+pyServ+" pods to be ready", func() bool { return len(c.fixturePods(t, pyServ)) == 2 })
	byNode := map[string]pod{}
	for _, p := range c.fixturePods(t, pyServ) {
		byNode[p.Spec.NodeName] = p
	}
	control, worker := c.nodes[0], c.nodes[1]
	onControl, ok1 := byNode[control]
	onWorker, ok2 := byNode[worker]
	if !ok1 || !ok2 {
		t.Fatalf("%s replicas are on %v; want one on %s and one on %s (the fixture's topology spread)", pyServ, keys(byNode), control, worker)
	}
	t.Logf("%s on %s: %s (%s); on %s: %s (%s)", pyServ, control, onControl.Metadata.Name, onControl.Status.PodIP,
		worker, onWorker.Metadata.Name, onWorker.Status.PodIP)

	t.Run("ls lists the pods of both nodes", func(t *testing.T) {
		out, err := exec.Command(buildMirrord(t), "ls", "--kubeconfig", c.kubeconfig, "-n", fixtureNamespace, "-o", "json").Output()
		if err != nil {
			t.Fatalf("mirrord ls: %v\n%s", err, out)
		}
		var paths []string
		if err := json.Unmarshal(out, &paths); err != nil {
			t.Fatalf("mirrord ls -o json: %v\n%s", err, out)
		}
		for _, p := range []pod{onControl, onWorker} {
			found := false
			for _, path := range paths {
				found = found || strings.HasPrefix(path, "pod/"+p.Metadata.Name)
			}
			if !found {
				t.Errorf("mirrord ls: no pod/%s (on %s) in %v", p.Metadata.Name, p.Spec.NodeName, paths)
			}
		}
	})

	target := "pod/" + onWorker.Metadata.Name
	for _, engine := range []string{"preload", "netstack"} {
		t.Run(engine+"/steal on the worker", func(t *testing.T) {
			c.startLocalApp(t, engine, target, 18191, "local "+engine+" via "+worker,
				`{"feature": {"network": {"incoming": {"mode": "steal", "port_mapping": [[18191, 80]]}}}}`)
			waitUntil(t, 2*time.Minute, "the steal of the worker's replica", func() bool {
				body, _ := podGet(onWorker.Status.PodIP, "/", nil)
				return body == "local "+engine+" via "+worker
			})
			c.checkAgentOn(t, worker)
			// The other node's replica is untouched.
			if body, err := podGet(onControl.Status.PodIP, "/", nil); !strings.Contains(body, `"service": "py-serv"`) {
				t.Errorf("the replica on %s answered %q, %v; want py-serv itself", control, body, err)
			}
		})

		t.Run(engine+"/mirror on the worker", func(t *testing.T) {
			out := c.startLocalApp(t, engine, target, 18192, "local (dropped)",
				`{"feature": {"network": {"incoming": {"mode": "mirror", "port_mapping": [[18192, 80]]}}}}`)
			waitUntil(t, 2*time.Minute, "the local app to see a request mirrored from the worker", func() bool {
				body, err := podGet(onWorker.Status.PodIP, "/mirrored-from-worker", nil)
				if err != nil || body != "404 page not found\n" {
					t.Fatalf("a mirrored request was answered %q, %v; want py-serv's 404", body, err)
				}
				return strings.Contains(readFile(out), "GOT /mirrored-from-worker")
			})
			c.checkAgentOn(t, worker)
		})
	}

	t.Run("-L to a Service with endpoints on both nodes", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		// The agent runs on the worker; kube-proxy there sends each new
		// connection to either endpoint, one of them across to the control
		// plane's node.
		c.startPortForward(t, 1, "-t", target, "-L", fmt.Sprintf("%d:%s:80", port, pyServ))
		c.checkAgentOn(t, worker)
		seen := map[string]bool{}
		for i := 0; i < 40 && len(seen) < 2; i++ {
			body, err := podGetURL(fmt.Sprintf("http://127.0.0.1:%d/hostname", port))
			if err != nil {
				t.Fatalf("GET /hostname through -L: %v", err)
			}
			seen[strings.TrimSpace(body)] = true
		}
		for _, p := range []pod{onControl, onWorker} {
			if !seen[p.Metadata.Name] {
				t.Errorf("no answer from %s (on %s) through -L %s:80; saw %v", p.Metadata.Name, p.Spec.NodeName, pyServ, keys(seen))
			}
		}
	})

	t.Run("outgoing from the worker's replica to a pod on the other node", func(t *testing.T) {
		url := "http://" + onControl.Status.PodIP + "/hostname"
		out, err := c.mirrord(t, 3*time.Minute, "exec", "-t", target, "-n", fixtureNamespace, "--",
			"curl", "-sS", "--max-time", "10", url)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !strings.Contains(out, onControl.Metadata.Name) {
			t.Errorf("GET %s from %s's network: %q, want %s", url, onWorker.Metadata.Name, out, onControl.Metadata.Name)
		}
	})

	// drainWorker drains the worker and returns when kubectl drain is
	// done, with the time it began. When the test ends, the worker is
	// uncordoned and the test waits for a py-serv replica ready on each
	// node again: the evicted replica's successor, not the evicted one
	// still terminating.
	drainWorker := func(t *testing.T, evicted string) time.Time {
		t.Cleanup(func() {
			c.kubectl(t, "uncordon", worker)
			waitUntil(t, 3*time.Minute, "a "+pyServ+" replica ready on each node again", func() bool {
				nodes := map[string]bool{}
				for _, p := range c.fixturePods(t, pyServ) {
					nodes[p.Spec.NodeName] = nodes[p.Spec.NodeName] || p.Metadata.Name != evicted
				}
				return nodes[control] && nodes[worker]
			})
		})
		began := time.Now()
		if out, err := c.run(t.Context(), "drain", worker, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=2m"); err != nil {
			t.Fatalf("kubectl drain %s: %v\n%s", worker, err, out)
		}
		return began
	}

	// The worker is drained under a session whose target is the
	// worker's replica: the target pod is evicted (its replacement cannot
	// be scheduled while the worker is cordoned: the topology spread),
	// so the session cannot go on. It ends with one clear message and a
	// non-zero status, and leaves nothing behind.
	t.Run("the worker drained under a pod target", func(t *testing.T) {
		outFile := filepath.Join(t.TempDir(), "out")
		out, err := os.Create(outFile)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		cmd := exec.Command(buildMirrord(t), "exec", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage,
			"-t", target, "-n", fixtureNamespace, "--", "sh", "-c", "echo ready; exec sleep 600")
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var werr error
		done := make(chan struct{})
		go func() { werr = cmd.Wait(); close(done) }()
		defer func() {
			select {
			case <-done:
			default:
				cmd.Process.Kill()
				<-done
			}
		}()
		waitUntil(t, 2*time.Minute, "the session to start", func() bool { return strings.Contains(readFile(outFile), "ready\n") })
		c.checkAgentOn(t, worker)
		drained := drainWorker(t, onWorker.Metadata.Name)
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			t.Fatal("the session still runs 2 minutes after its target's node was drained")
		}
		said := readFile(outFile)
		t.Logf("the session ended %v after the drain began: %v\n%s", time.Since(drained).Round(100*time.Millisecond), werr, said)
		if werr == nil {
			t.Fatalf("the session exited 0 after its target was evicted")
		}
		if !strings.Contains(said, "lost the connection to the agent and could not reconnect") || !strings.Contains(said, onWorker.Metadata.Name) {
			t.Errorf("the session's last words do not say why, naming the target")
		}
		waitUntil(t, time.Minute, "the agent's Job, pods and Secret to be removed", func() bool {
			left := c.kubectl(t, "get", "jobs,pods,secrets", "-n", fixtureNamespace, "-l", "app=mirrord", "-o", "name")
			return strings.TrimSpace(left) == ""
		})
	})

	// The same drain under a deploy/ target: the session follows its
	// workload to the replica left on the control-plane node (a new agent
	// there) and steals it, without the program noticing.
	t.Run("the worker drained under a deploy target", func(t *testing.T) {
		// deploy/ picks the oldest ready replica: make it the worker's by
		// replacing the control-plane's.
		var onW, onC pod
		for _, p := range c.fixturePods(t, pyServ) {
			if p.Spec.NodeName == worker {
				onW = p
			} else {
				c.kubectl(t, "delete", "pod", "-n", fixtureNamespace, p.Metadata.Name, "--wait=true")
			}
		}
		if onW.Metadata.Name == "" {
			t.Fatalf("no %s replica on %s", pyServ, worker)
		}
		waitUntil(t, 2*time.Minute, "a new "+pyServ+" replica ready on "+control, func() bool {
			for _, p := range c.fixturePods(t, pyServ) {
				if p.Spec.NodeName == control {
					onC = p
					return true
				}
			}
			return false
		})
		const body = "local via deploy"
		out := c.startLocalApp(t, "preload", "deploy/"+pyServ, 18193, body,
			`{"feature": {"network": {"incoming": {"mode": "steal", "port_mapping": [[18193, 80]]}}}}`)
		waitUntil(t, 2*time.Minute, "the steal of the worker's replica", func() bool {
			got, _ := podGet(onW.Status.PodIP, "/", nil)
			return got == body
		})
		c.checkAgentOn(t, worker)
		drained := drainWorker(t, onW.Metadata.Name)
		waitUntil(t, 2*time.Minute, "the session to steal the replica on "+control, func() bool {
			got, _ := podGet(onC.Status.PodIP, "/", nil)
			return got == body
		})
		t.Logf("the replica on %s stolen %v after the drain began", control, time.Since(drained).Round(100*time.Millisecond))
		waitUntil(t, time.Minute, "the evicted agent's pod to go", func() bool {
			var list podList
			c.getJSON(t, &list, "pods", "-n", fixtureNamespace, "-l", "app=mirrord")
			for _, p := range list.Items {
				if p.Spec.NodeName != control {
					return false
				}
			}
			return len(list.Items) > 0
		})
		said := readFile(out)
		for _, w := range []string{"lost the connection to the agent; reconnecting", "starting a new agent", "reconnected to the agent after"} {
			if !strings.Contains(said, w) {
				t.Errorf("output lacks %q:\n%s", w, said)
			}
		}
	})
	waitUntil(t, time.Minute, "agent jobs to be removed", func() bool { return len(c.agentJobs(t)) == 0 })
}

// checkAgentOn fails the test unless every agent pod in the fixture
// namespace runs on node (an agent joins its target's network namespace and
// so must be on the target's node).
func (c *cluster) checkAgentOn(t *testing.T, node string) {
	t.Helper()
	var list podList
	c.getJSON(t, &list, "pods", "-n", fixtureNamespace, "-l", "app=mirrord")
	if len(list.Items) == 0 {
		t.Fatal("no agent pod while the session runs")
	}
	for _, p := range list.Items {
		if p.Spec.NodeName != node {
			t.Errorf("agent pod %s runs on %q, want its target's node %s", p.Metadata.Name, p.Spec.NodeName, node)
		}
	}
}

// podGetURL is podGet for a whole URL.
func podGetURL(url string) (string, error) {
	host, path, _ := strings.Cut(strings.TrimPrefix(url, "http://"), "/")
	return podGet(host, "/"+path, nil)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
