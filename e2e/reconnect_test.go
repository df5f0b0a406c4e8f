//go:build e2e

package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReconnect: a session outlives what goes away under it. Each case
// runs a local app that steals py-serv's port 80 and calls the backend
// Service on request; the app keeps running throughout, the port comes
// back to it and its outgoing calls work again afterwards, and the
// progress output says what happened.
func TestReconnect(t *testing.T) {
	c := newCluster(t)
	const port = 18184
	cfg := `{"feature": {"network": {"incoming": {"mode": "steal", "port_mapping": [[18184, 80]]}}}}`
	settle := func(t *testing.T) []pod {
		waitUntil(t, time.Minute, "agent jobs from before to be gone", func() bool { return len(c.agentJobs(t)) == 0 })
		waitUntil(t, 2*time.Minute, "both "+pyServ+" pods to be ready", func() bool { return len(c.fixturePods(t, pyServ)) == 2 })
		return c.fixturePods(t, pyServ)
	}
	start := func(t *testing.T, engine, target string) string {
		return c.startLocal(t, engine, target, cfg,
			"python3", "../integration/testdata/reconnectapp.py", strconv.Itoa(port), "local "+engine, "http://backend:8080/")
	}
	stolen := func(podIP, engine string) bool {
		body, _ := podGet(podIP, "/x", nil)
		return body == "local "+engine
	}
	outgoing := func(t *testing.T, podIP string) {
		t.Helper()
		if body, err := podGet(podIP, "/out", nil); !strings.Contains(body, `"service": "backend"`) {
			t.Errorf("the local app's call to the backend: %q, %v", body, err)
		}
	}
	say := func(t *testing.T, out string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(readFile(out), w) {
				t.Errorf("output lacks %q:\n%s", w, readFile(out))
			}
		}
	}

	// The API server restarts: the port-forward's connections all drop
	// and new ones are refused until it is back.
	t.Run("api server restart", func(t *testing.T) {
		p := settle(t)[0]
		out := start(t, "netstack", "pod/"+p.Metadata.Name)
		waitUntil(t, 2*time.Minute, "the steal", func() bool { return stolen(p.Status.PodIP, "netstack") })
		outgoing(t, p.Status.PodIP)
		back := restartAPIServer(t, c)
		waitUntil(t, 30*time.Second, "the port to be stolen again", func() bool { return stolen(p.Status.PodIP, "netstack") })
		took := time.Since(back)
		t.Logf("stolen again %v after the API server was ready", took.Round(time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("reconnected %v after the API server was back; want within 5 s", took)
		}
		outgoing(t, p.Status.PodIP)
		say(t, out, "lost the connection to the agent; reconnecting", "reconnected to the agent after")
	})

	// The agent's pod is deleted: its Job starts another, which the
	// session joins.
	t.Run("agent pod deleted", func(t *testing.T) {
		p := settle(t)[1]
		out := start(t, "preload", "pod/"+p.Metadata.Name)
		waitUntil(t, 2*time.Minute, "the steal", func() bool { return stolen(p.Status.PodIP, "preload") })
		agents := strings.Fields(c.kubectl(t, "get", "pods", "-n", fixtureNamespace, "-l", "app=mirrord", "-o", "name"))
		if len(agents) != 1 {
			t.Fatalf("agent pods: %v; want one", agents)
		}
		c.kubectl(t, "delete", "-n", fixtureNamespace, agents[0], "--wait=false")
		deleted := time.Now()
		waitUntil(t, time.Minute, "the session to notice", func() bool {
			return strings.Contains(readFile(out), "lost the connection to the agent")
		})
		waitUntil(t, 90*time.Second, "the session to be back", func() bool {
			return strings.Contains(readFile(out), "reconnected to the agent after")
		})
		waitUntil(t, 10*time.Second, "the port to be stolen again", func() bool {
			return stolen(p.Status.PodIP, "preload")
		})
		t.Logf("stolen again %v after the agent pod was deleted", time.Since(deleted).Round(time.Millisecond))
		outgoing(t, p.Status.PodIP)
		say(t, out, "lost the connection to the agent; reconnecting", "reconnected to the agent after")
	})

	// The target's Deployment is restarted: its pods are replaced, the
	// agent ends with its target, and the session follows the Deployment
	// to a new ready pod.
	t.Run("target pod replaced", func(t *testing.T) {
		pods := settle(t)
		out := start(t, "preload", "deploy/"+pyServ)
		old := map[string]bool{}
		for _, p := range pods {
			old[p.Metadata.Name] = true
		}
		waitUntil(t, 2*time.Minute, "the steal", func() bool {
			for _, p := range c.fixturePods(t, pyServ) {
				if stolen(p.Status.PodIP, "preload") {
					return true
				}
			}
			return false
		})
		c.kubectl(t, "rollout", "restart", "-n", fixtureNamespace, "deploy/"+pyServ)
		restarted := time.Now()
		c.kubectl(t, "rollout", "status", "-n", fixtureNamespace, "deploy/"+pyServ, "--timeout=3m")
		var now string
		waitUntil(t, 2*time.Minute, "a new pod of the deployment to be stolen", func() bool {
			for _, p := range c.fixturePods(t, pyServ) {
				if !old[p.Metadata.Name] && stolen(p.Status.PodIP, "preload") {
					now = p.Status.PodIP
					return true
				}
			}
			return false
		})
		t.Logf("a new pod stolen %v after the rollout restart", time.Since(restarted).Round(time.Millisecond))
		outgoing(t, now)
		say(t, out, "lost the connection to the agent; reconnecting", "starting a new agent", "reconnected to the agent after")
	})

	// Nothing is left behind by any of them once their sessions ended.
	waitUntil(t, time.Minute, "agent jobs and pods to be gone", func() bool {
		pods := c.kubectl(t, "get", "pods", "-n", fixtureNamespace, "-l", "app=mirrord", "-o", "name")
		return len(c.agentJobs(t)) == 0 && strings.TrimSpace(pods) == ""
	})
	for _, p := range settle(t) {
		if tables := ourTables(t, p.Metadata.Name); len(tables) != 0 {
			t.Errorf("pod %s still has nftables tables %v", p.Metadata.Name, tables)
		}
	}
}

// restartAPIServer kills the e2e cluster's API server (a graceful stop
// waits up to a minute for the port-forwards), starts it again with the
// same command line and returns when it is ready.
func restartAPIServer(t *testing.T, c *cluster) time.Time {
	t.Helper()
	// The pid file below is the processes cluster's: on kind it would name
	// another cluster's API server.
	c.requireProcessesCluster(t)
	run := os.Getenv("E2E_RUN")
	if run == "" {
		run = "/run/mirrord-e2e"
	}
	pidFile := filepath.Join(run, "pids", "kube-apiserver.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Skipf("the API server is not one this harness started (%v)", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatalf("the API server (pid %d): %v", pid, err)
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	syscall.Kill(pid, syscall.SIGKILL)
	waitUntil(t, time.Minute, "the API server to stop", func() bool {
		// Gone, or a zombie nobody reaps (its parent, the harness's
		// shell, has exited).
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return true
		}
		_, after, _ := strings.Cut(string(stat), ") ")
		return strings.HasPrefix(after, "Z")
	})
	// A killed process shows as a zombie as soon as its main thread is
	// one, while its other threads may still be ending with its
	// descriptors: CI once restarted the API server into "bind: address
	// already in use". Its port free is what counts.
	port := "6443"
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--secure-port="); ok {
			port = v
		}
	}
	waitUntil(t, time.Minute, "the API server's port "+port+" to be free", func() bool {
		ln, err := net.Listen("tcp", ":"+port)
		if err != nil {
			return false
		}
		ln.Close()
		return true
	})
	stopped := time.Now()
	logFile, err := os.OpenFile(filepath.Join(apiserverLogDir(), "kube-apiserver.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	// The descriptors this test inherited (such as the lock of `flock
	// LOCK make e2e`) must not pass to the API server, which outlives
	// the run: close-on-exec for all but stdin, stdout and stderr.
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range fds {
			if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
				syscall.CloseOnExec(fd)
			}
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("restart the API server: %v", err)
	}
	os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	go cmd.Wait()
	waitUntil(t, 2*time.Minute, "the API server to be ready", func() bool {
		_, err := c.run(t.Context(), "get", "--raw", "/readyz")
		return err == nil
	})
	t.Logf("API server down for %v", time.Since(stopped).Round(time.Millisecond))
	return time.Now()
}

func apiserverLogDir() string {
	if s := os.Getenv("E2E_STATE"); s != "" {
		return filepath.Join(s, "logs")
	}
	return "/var/lib/mirrord-e2e/logs"
}
