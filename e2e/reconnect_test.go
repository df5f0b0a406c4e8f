//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReconnect: a session outlives what goes away under it: the API
// server restarting, its own connections to the API server cut, this side
// stopped for 30 s, the agent's pod deleted, the target's pods replaced
// (a Deployment's and an Argo Rollout's by new ones, a StatefulSet's
// under the same name).
// Each case runs a local app that steals py-serv's port 80 and calls the
// backend Service on request; the app keeps running throughout, the port
// goes back to the target's app while the session is away (where the
// outage is long enough to see it) and comes back to the local app within
// 5 s of the way being back, a kept-alive connection stolen before does not
// hang, outgoing calls work again afterwards, and the progress output says
// what happened.
func TestReconnect(t *testing.T) {
	c := newCluster(t)
	const port = 18184
	cfg := `{"feature": {"network": {"incoming": {"mode": "steal", "port_mapping": [[18184, 80]]}}}}`
	settle := func(t *testing.T) []pod {
		waitUntil(t, time.Minute, "agent jobs from before to be gone", func() bool { return len(c.agentJobs(t)) == 0 })
		waitUntil(t, 2*time.Minute, "both "+pyServ+" pods to be ready", func() bool { return len(c.fixturePods(t, pyServ)) == 2 })
		return c.fixturePods(t, pyServ)
	}
	// start runs the local app, and next to it a process that holds a
	// connection to the backend open across the fault: it must end
	// reset (its bytes lost), not cleanly (say checks).
	start := func(t *testing.T, engine, target string) string {
		out := c.startLocal(t, engine, target, cfg, "sh", "-c",
			"python3 ../integration/testdata/holdconn.py backend 8080 & "+
				"exec python3 ../integration/testdata/reconnectapp.py "+strconv.Itoa(port)+" 'local "+engine+"' http://backend:8080/")
		waitUntil(t, 2*time.Minute, "the connection to the backend to be held", func() bool { return strings.Contains(readFile(out), "held\n") })
		return out
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
	// stolenAgain waits up to wait for the port to be the session's again
	// and wants it within 5 s of since (the way to the agent back).
	stolenAgain := func(t *testing.T, podIP, engine string, wait time.Duration, since time.Time, after string) {
		t.Helper()
		waitUntil(t, wait, "the port to be stolen again", func() bool { return stolen(podIP, engine) })
		took := time.Since(since)
		t.Logf("stolen again %v after %s", took.Round(time.Millisecond), after)
		if took > 5*time.Second {
			t.Errorf("stolen again %v after %s; want within 5 s", took, after)
		}
	}
	say := func(t *testing.T, out string, want ...string) {
		t.Helper()
		if strings.Contains(readFile(out), "held\n") {
			waitUntil(t, 10*time.Second, "the held connection to end", func() bool { return strings.Contains(readFile(out), "ended: ") })
			want = append(want, "ended: reset\n")
		}
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
		kept := keptAlive(t, p.Status.PodIP, "local netstack")
		// While the API server is away, so is the session: the target's
		// app gets its port back.
		away := make(chan bool, 1)
		stop := make(chan struct{})
		go func() {
			seen := false
			for !seen {
				select {
				case <-stop:
					away <- false
					return
				case <-time.After(100 * time.Millisecond):
				}
				seen = targetAnswers(p.Status.PodIP)
			}
			away <- true
		}()
		back := restartAPIServer(t, c)
		stolenAgain(t, p.Status.PodIP, "netstack", 30*time.Second, back, "the API server was ready")
		keptAfter(t, kept, p.Status.PodIP, "the restart")
		close(stop)
		if !<-away {
			t.Errorf("the target's app never answered while the API server was away")
		}
		outgoing(t, p.Status.PodIP)
		say(t, out, "lost the connection to the agent; reconnecting", "reconnected to the agent after")
	})

	// Only this session's connections to the API server end (as a
	// network drop or a proxy would end them), the API server staying up:
	// a connection stolen before is closed, the session reconnects at
	// once.
	t.Run("port-forward connections cut", func(t *testing.T) {
		p := settle(t)[0]
		out := start(t, "preload", "pod/"+p.Metadata.Name)
		waitUntil(t, 2*time.Minute, "the steal", func() bool { return stolen(p.Status.PodIP, "preload") })
		kept := keptAlive(t, p.Status.PodIP, "local preload")
		n := cutAPIConnections(t, c, sessionPID(t, out))
		cut := time.Now()
		t.Logf("cut %d connections to the API server", n)
		if n == 0 {
			t.Fatal("the session has no connection to the API server to cut")
		}
		stolenAgain(t, p.Status.PodIP, "preload", 10*time.Second, cut, "the cut")
		keptAfter(t, kept, p.Status.PodIP, "the cut")
		outgoing(t, p.Status.PodIP)
		say(t, out, "lost the connection to the agent; reconnecting", "reconnected to the agent after")
	})

	// This side stops for 30 s (a laptop asleep): the target's app gets
	// its port back meanwhile, and the session takes it again when it
	// wakes.
	t.Run("paused 30 s", func(t *testing.T) {
		p := settle(t)[1]
		out := start(t, "netstack", "pod/"+p.Metadata.Name)
		waitUntil(t, 2*time.Minute, "the steal", func() bool { return stolen(p.Status.PodIP, "netstack") })
		pid := sessionPID(t, out)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				syscall.Kill(pid, syscall.SIGCONT)
			}
		}
		defer resume()
		waitUntil(t, 25*time.Second, "the target's app to answer while this side sleeps", func() bool { return targetAnswers(p.Status.PodIP) })
		t.Logf("the target's app answered %v after the stop", time.Since(stopped).Round(100*time.Millisecond))
		time.Sleep(time.Until(stopped.Add(30 * time.Second)))
		resume()
		stolenAgain(t, p.Status.PodIP, "netstack", 10*time.Second, time.Now(), "SIGCONT")
		outgoing(t, p.Status.PodIP)
		say(t, out, "reconnected to the agent after")
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

	// A StatefulSet's pod is replaced under the same name (a rollout
	// restart): the agent ends with its target, and the session follows
	// the StatefulSet to the new pod.
	t.Run("statefulset pod replaced", func(t *testing.T) {
		ns := c.namespace(t, "mirrord-sts")
		c.apply(t, fmt.Sprintf(statefulApp, ns, testappImage))
		c.kubectl(t, "rollout", "status", "-n", ns, "statefulset/web", "--timeout=2m")
		podIP := func() string {
			return strings.TrimSpace(c.kubectl(t, "get", "pod", "-n", ns, "web-0", "-o", "jsonpath={.status.podIP}"))
		}
		uid := func() string { return c.kubectl(t, "get", "pod", "-n", ns, "web-0", "-o", "jsonpath={.metadata.uid}") }
		out := c.startLocalIn(t, ns, "preload", "statefulset/web", cfg,
			"python3", "../integration/testdata/reconnectapp.py", strconv.Itoa(port), "local preload", "http://backend.default:8080/")
		waitUntil(t, 2*time.Minute, "the steal", func() bool { return stolen(podIP(), "preload") })
		before := uid()
		c.kubectl(t, "rollout", "restart", "-n", ns, "statefulset/web")
		restarted := time.Now()
		c.kubectl(t, "rollout", "status", "-n", ns, "statefulset/web", "--timeout=3m")
		var ip string
		waitUntil(t, 2*time.Minute, "the new web-0 to be stolen", func() bool {
			ip = podIP()
			return uid() != before && ip != "" && stolen(ip, "preload")
		})
		t.Logf("the new web-0 stolen %v after the rollout restart", time.Since(restarted).Round(time.Millisecond))
		outgoing(t, ip)
		say(t, out, "lost the connection to the agent; reconnecting", "starting a new agent", "reconnected to the agent after")
	})

	// An Argo Rollout's pod is replaced. The clusters run no Argo
	// controller: the test installs the Rollout CRD, a Rollout, and the
	// ReplicaSet Argo would make for it (mirrord reads only the
	// Rollout's selector); the ReplicaSet replaces the deleted pod.
	t.Run("rollout pod replaced", func(t *testing.T) {
		c.installRolloutCRD(t)
		ns := c.namespace(t, "mirrord-rollout")
		c.apply(t, fmt.Sprintf(rolloutApp, ns, testappImage))
		old := c.soleReadyPod(t, ns, "app=web")
		out := c.startLocalIn(t, ns, "preload", "rollout/web", cfg,
			"python3", "../integration/testdata/reconnectapp.py", strconv.Itoa(port), "local preload", "http://backend.default:8080/")
		waitUntil(t, 2*time.Minute, "the steal", func() bool { return stolen(old.Status.PodIP, "preload") })
		c.kubectl(t, "delete", "pod", "-n", ns, old.Metadata.Name, "--wait=false")
		replaced := time.Now()
		var ip string
		waitUntil(t, 2*time.Minute, "the rollout's new pod to be stolen", func() bool {
			for _, p := range c.fixturePodsIn(t, ns, "app=web") {
				if p.Metadata.Name != old.Metadata.Name && stolen(p.Status.PodIP, "preload") {
					ip = p.Status.PodIP
					return true
				}
			}
			return false
		})
		t.Logf("the rollout's new pod stolen %v after the old one was deleted", time.Since(replaced).Round(time.Millisecond))
		outgoing(t, ip)
		say(t, out, "lost the connection to the agent; reconnecting", "starting a new agent", "reconnected to the agent after")
	})

	// Nothing is left behind by any of them once their sessions ended.
	c.waitNothingLeft(t, time.Minute)
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

// sessionPID is the pid of the mirrord process (a child of this test)
// whose output goes to out.
func sessionPID(t *testing.T, out string) int {
	t.Helper()
	bin, err := filepath.EvalSymlinks(buildMirrord(t))
	if err != nil {
		t.Fatal(err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range procs {
		exe, _ := os.Readlink(dir + "/exe")
		stdout, _ := os.Readlink(dir + "/fd/1")
		stat, _ := os.ReadFile(dir + "/stat")
		// stat: pid (comm) state ppid ...
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if exe == bin && stdout == out && len(fields) > 1 && fields[1] == strconv.Itoa(os.Getpid()) {
			pid, _ := strconv.Atoi(filepath.Base(dir))
			return pid
		}
	}
	t.Fatalf("no mirrord process writing to %s", out)
	return 0
}

// cutAPIConnections shuts down, both ways, every TCP connection that
// process pid holds to the API server's port (taking a copy of each socket
// with pidfd_getfd), as a dropped network would end them. It returns how
// many it cut.
func cutAPIConnections(t *testing.T, c *cluster, pid int) int {
	t.Helper()
	// The port of the kubeconfig's server.
	kc, err := os.ReadFile(c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`server: https://[^\s]*:(\d+)`).FindSubmatch(kc)
	if m == nil {
		t.Fatalf("no server with a port in %s", c.kubeconfig)
	}
	port, _ := strconv.Atoi(string(m[1]))
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	fds, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range fds {
		if link, _ := os.Readlink(dir + "/" + e.Name()); !strings.HasPrefix(link, "socket:") {
			continue
		}
		fd, _ := strconv.Atoi(e.Name())
		mine, err := unix.PidfdGetfd(pidfd, fd, 0)
		if err != nil {
			continue
		}
		peer, err := unix.Getpeername(mine)
		var peerPort int
		switch a := peer.(type) {
		case *unix.SockaddrInet4:
			peerPort = a.Port
		case *unix.SockaddrInet6:
			peerPort = a.Port
		}
		if err == nil && peerPort == port {
			if unix.Shutdown(mine, unix.SHUT_RDWR) == nil {
				n++
			}
		}
		unix.Close(mine)
	}
	return n
}

// keptAlive opens a keep-alive connection to the pod's port 80 and checks
// that its first request is stolen (answered want).
func keptAlive(t *testing.T, podIP, want string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", podIP+":80", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /kept HTTP/1.1\r\nHost: %s\r\n\r\n", podIP)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != want {
		t.Fatalf("the kept-alive connection's request was answered %q, want %q", body, want)
	}
	return conn
}

// keptAfter checks a kept-alive connection stolen before fault: closed or
// reset (the session it was stolen for is gone), or, as py-serv's probes
// make the steal one per request, the agent's, answering its next request
// (from the session again, or the target's app) within 5 s. A connection
// that hangs is the failure; what it did is logged.
func keptAfter(t *testing.T, conn net.Conn, podIP, fault string) {
	t.Helper()
	if got, err := keptAnswer(conn, podIP, 5*time.Second); err != nil {
		t.Errorf("the connection stolen before %s: %v", fault, err)
	} else {
		t.Logf("the connection stolen before %s: %s", fault, got)
	}
}

// keptAnswer is what a kept-alive connection does with one more request
// within d: an error only if it hangs.
func keptAnswer(conn net.Conn, podIP string, d time.Duration) (string, error) {
	conn.SetDeadline(time.Now().Add(d))
	if _, err := fmt.Fprintf(conn, "GET /kept-after HTTP/1.1\r\nHost: %s\r\n\r\n", podIP); err != nil {
		return "closed: " + err.Error(), nil
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "", fmt.Errorf("no answer and not closed after %v", d)
	}
	if err != nil {
		return "closed: " + err.Error(), nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return "", fmt.Errorf("an answer's body that never ended after %v", d)
	}
	// The local app serves one connection at a time: this one is done.
	conn.Close()
	return fmt.Sprintf("answered %d %q", resp.StatusCode, body), nil
}

// targetAnswers says whether a request to the pod's port 80 reached
// py-serv's own app (its 404 for an unknown path), not a local one.
func targetAnswers(podIP string) bool {
	body, err := podGet(podIP, "/x", nil)
	return err == nil && !strings.HasPrefix(body, "local ")
}

// statefulApp is a StatefulSet of one pod (web-0) of the test app on port
// 80, in a namespace of the test's own.
// rolloutApp is an Argo Rollout of one web replica, with the ReplicaSet
// Argo's controller would make for it (the clusters run none).
const rolloutApp = `
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
` + webPodTemplate + `---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-6d4f8b, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
` + webPodTemplate

// rolloutCRD is Argo Rollouts' CustomResourceDefinition, without its
// schema: enough to create Rollout objects that mirrord reads.
const rolloutCRD = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: rollouts.argoproj.io}
spec:
  group: argoproj.io
  scope: Namespaced
  names: {kind: Rollout, listKind: RolloutList, plural: rollouts, singular: rollout, shortNames: [ro]}
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
`

// installRolloutCRD installs rolloutCRD until the test ends, unless the
// cluster has it already (then it is left as found).
func (c *cluster) installRolloutCRD(t *testing.T) {
	t.Helper()
	if _, err := c.run(t.Context(), "get", "crd", "rollouts.argoproj.io"); err == nil {
		return
	}
	c.apply(t, rolloutCRD)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.run(ctx, "delete", "crd", "rollouts.argoproj.io", "--wait=true"); err != nil {
			t.Errorf("deleting the Rollout CRD: %v", err)
		}
	})
	c.kubectl(t, "wait", "--for=condition=Established", "crd/rollouts.argoproj.io", "--timeout=30s")
}

const statefulApp = `
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: %[1]s}
spec:
  replicas: 1
  serviceName: web
  selector: {matchLabels: {app: web}}
` + webPodTemplate
