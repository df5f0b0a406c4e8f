//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The Docker engine the container tests run: Debian's docker.io, started
// by the test when none answers there, with its own data root (images are
// kept between runs), no iptables rules (the engine's would set the
// FORWARD policy to DROP and cut the cluster's pods off) and no bridge
// (nothing to leave behind on the machine; the containers need no
// network: mirrord reaches the agent through a mounted socket).
const (
	dockerRun  = "/run/mirrord-e2e-docker"
	dockerSock = dockerRun + "/docker.sock"
	dockerData = "/var/cache/mirrord-e2e-docker"
)

// startDocker returns the environment for docker commands against the
// test's engine, starting it for the test if it is not running.
func startDocker(t *testing.T) []string {
	t.Helper()
	env := append(os.Environ(), "DOCKER_HOST=unix://"+dockerSock)
	info := func() error {
		cmd := exec.Command("docker", "info", "--format", "{{.ServerVersion}}")
		cmd.Env = env
		return cmd.Run()
	}
	if info() == nil {
		return env
	}
	for _, bin := range []string{"dockerd", "docker"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is missing: run scripts/deps.sh (it installs Debian's docker.io)", bin)
		}
	}
	if err := os.MkdirAll(dockerRun, 0o700); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(t.TempDir(), "dockerd.log")
	logOut, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("dockerd", "--host", "unix://"+dockerSock, "--data-root", dockerData,
		"--exec-root", dockerRun+"/exec", "--pidfile", dockerRun+"/dockerd.pid",
		"--iptables=false", "--ip6tables=false", "--bridge=none")
	cmd.Stdout, cmd.Stderr = logOut, logOut
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		os.RemoveAll(dockerRun)
	})
	deadline := time.Now().Add(60 * time.Second)
	for info() != nil {
		select {
		case <-exited:
			// The one case the test cannot go on: the engine itself
			// refuses to run on this machine.
			t.Skipf("the Docker engine does not run on this machine, so mirrord container cannot be tested; dockerd's log:\n%s", readFile(logFile))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not answer within 60 s; its log:\n%s", readFile(logFile))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return env
}

// Podman, the other runtime TestContainer runs: Debian's, rootful and
// daemonless, with a configuration of the test's own (CONTAINERS_CONF,
// CONTAINERS_STORAGE_CONF): its storage under podmanData (images are kept
// between runs; no private bind mount of it), its run state under
// podmanRun, and no network namespace setup by default (netns "none": no
// netavark, no bridge or firewall rules; mirrord reaches the agent through
// a mounted socket).
const (
	podmanRun  = "/run/mirrord-e2e-podman"
	podmanData = "/var/cache/mirrord-e2e-podman"
)

// startPodman returns the environment for podman commands with the
// test's configuration.
func startPodman(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Fatal("podman is missing: run scripts/deps.sh (it installs Debian's podman)")
	}
	if err := os.MkdirAll(podmanRun, 0o700); err != nil {
		t.Fatal(err)
	}
	// Rootful podman gives a container open-files and process limits of
	// 1048576, which runc cannot set where root lacks CAP_SYS_RESOURCE
	// (this VM): the test's own hard limits instead, the process one no
	// higher than kernel.pid_max (podman lowers its own to that, and runc
	// inherits it).
	var nofile, nproc unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile); err != nil {
		t.Fatal(err)
	}
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &nproc); err != nil {
		t.Fatal(err)
	}
	nprocMax := min(nproc.Max, 1048576)
	if pm, err := strconv.ParseUint(strings.TrimSpace(readFile("/proc/sys/kernel/pid_max")), 10, 64); err == nil {
		nprocMax = min(nprocMax, pm)
	}
	ulimits := fmt.Sprintf("[\"nofile=%[1]d:%[1]d\", \"nproc=%[2]d:%[2]d\"]", min(nofile.Max, 1048576), nprocMax)
	conf := filepath.Join(podmanRun, "containers.conf")
	storage := filepath.Join(podmanRun, "storage.conf")
	for file, text := range map[string]string{
		conf: fmt.Sprintf("[containers]\nnetns = \"none\"\ndefault_ulimits = %s\n[engine]\ntmp_dir = %q\n", ulimits, podmanRun+"/libpod"),
		storage: fmt.Sprintf("[storage]\ndriver = \"overlay\"\ngraphroot = %q\nrunroot = %q\n[storage.options.overlay]\nskip_mount_home = \"true\"\n",
			podmanData+"/storage", podmanRun+"/storage"),
	} {
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := append(os.Environ(), "CONTAINERS_CONF="+conf, "CONTAINERS_STORAGE_CONF="+storage)
	cmd := exec.Command("podman", "info", "--format", "{{.Version.Version}} {{.Store.GraphDriverName}}")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("podman does not work on this machine, so mirrord container cannot be tested with it: podman info: %v\n%s", err, out)
	}
	return env
}

// probeRuntime skips the test when the runtime cannot run a container
// here, mirrord aside: the Python image prints a word.
func probeRuntime(t *testing.T, runtime string, env []string) {
	t.Helper()
	cmd := exec.Command(runtime, "run", "--rm", "mirrord-e2e/python:e2e", "-c", "print('probe')")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "probe" {
		t.Skipf("%s cannot run a container on this machine, so mirrord container cannot be tested with it: %s run: %v\n%s", runtime, runtime, err, out)
	}
}

// buildContainerImages builds the test images (testdata/container-images.sh)
// in the runtime's store (docker's engine or podman's, as env says).
func buildContainerImages(t *testing.T, runtime string, env []string) {
	t.Helper()
	testapp := filepath.Join(t.TempDir(), "testapp")
	build := exec.Command("go", "build", "-o", testapp, "./testapp")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the test app: %v\n%s", err, out)
	}
	images := exec.Command("testdata/container-images.sh", testapp, runtime)
	images.Env = env
	if out, err := images.CombinedOutput(); err != nil {
		t.Fatalf("build the test images: %v\n%s", err, out)
	}
}

// syncBuffer is a process's output, read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// containerPy is the Python container's program: it prints what it got
// from the target (env, DNS, a cluster-only service, a file only the
// target has), then serves port 80, whose traffic the session steals.
const containerPy = `
import os, socket, urllib.request, http.server
print("greeting=" + os.environ.get("APP_GREETING", ""), flush=True)
print("backend-ip=" + socket.gethostbyname("backend"), flush=True)
print("backend=" + urllib.request.urlopen("http://backend:8080/health", timeout=10).read().decode().strip(), flush=True)
print("file=" + open("/app/config.json").read(), flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = ("python-container " + os.environ.get("APP_GREETING", "") + " " + self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("", 80), H).serve_forever()
`

// containerLabel marks the containers TestContainer runs, to find them.
const containerLabel = "dev.mirrord-go.e2e=TestContainer"

// TestContainer: `mirrord container -t deploy/py-serv --steal -- RUNTIME
// run ...`, with docker and with podman, for a Python image (a dynamic
// program: the preload library) and a static Go image FROM scratch (the
// sandbox, inside the container); each sees the pod's env, resolves and
// reaches a ClusterIP-only service, reads a file only the target has, and
// answers the traffic stolen from the pod. Then SIGTERM to mirrord stops
// the container (--rm: nothing left) and the agent goes away. With -d the
// session outlives the runtime's client and ends when the container is
// stopped. A runtime that cannot run a container on this machine is
// skipped, saying so.
func TestContainer(t *testing.T) {
	c := newCluster(t)
	waitUntil(t, time.Minute, "both "+pyServ+" pods to be ready", func() bool { return len(c.fixturePods(t, pyServ)) == 2 })
	for _, rt := range []struct {
		name  string
		start func(*testing.T) []string
	}{
		{"docker", startDocker},
		{"podman", startPodman},
	} {
		t.Run(rt.name, func(t *testing.T) {
			start := time.Now()
			env := rt.start(t)
			buildContainerImages(t, rt.name, env)
			if rt.name != "docker" {
				// docker's engine was seen to start (startDocker).
				probeRuntime(t, rt.name, env)
			}
			t.Logf("%s ready, with the test images, in %v", rt.name, time.Since(start).Round(time.Millisecond))
			testContainer(t, c, rt.name, env)
		})
	}
	waitUntil(t, time.Minute, "agent jobs to be removed", func() bool { return len(c.agentJobs(t)) == 0 })
}

// containerRun is a running `mirrord container`.
type containerRun struct {
	out  *syncBuffer
	cmd  *exec.Cmd
	done chan struct{} // closed once mirrord exited, with err its exit error
	err  error
}

// wait returns mirrord's exit error once it exits, or ended false after d.
func (r *containerRun) wait(d time.Duration) (ended bool, err error) {
	select {
	case <-r.done:
		return true, r.err
	case <-time.After(d):
		return false, nil
	}
}

// alive fails the test if mirrord has exited: what the test waits for
// will not come.
func (r *containerRun) alive(t *testing.T) bool {
	t.Helper()
	select {
	case <-r.done:
		t.Fatalf("mirrord container exited (%v); output:\n%s", r.err, r.out)
	default:
	}
	return true
}

func testContainer(t *testing.T, c *cluster, runtime string, env []string) {
	pods := c.fixturePods(t, pyServ)
	backendIP := c.serviceIP(t, fixtureNamespace, "backend")
	args := func(steal bool, run ...string) []string {
		a := []string{"container", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage,
			"-t", "deploy/" + pyServ, "-n", fixtureNamespace}
		if steal {
			a = append(a, "--steal")
		}
		return append(append(a, "--", runtime), run...)
	}

	// run starts mirrord container with the runtime's run (options
	// first: the test's label is added before them) and returns it; stop
	// ends it (SIGTERM, as a user's Ctrl-C would be relayed) and returns
	// its exit error.
	run := func(t *testing.T, opts ...string) (*containerRun, func() error) {
		r := &containerRun{out: &syncBuffer{}, done: make(chan struct{})}
		r.cmd = exec.Command(buildMirrord(t), args(true, append([]string{"run", "--label", containerLabel}, opts...)...)...)
		r.cmd.Env = env
		r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { r.err = r.cmd.Wait(); close(r.done) }()
		stop := func() error {
			r.cmd.Process.Signal(syscall.SIGTERM) // (an error once it exited)
			if ended, err := r.wait(30 * time.Second); ended {
				return err
			}
			r.cmd.Process.Kill()
			<-r.done
			t.Errorf("mirrord container did not end within 30 s of SIGTERM; output:\n%s", r.out)
			return r.err
		}
		t.Cleanup(func() { stop() })
		return r, stop
	}
	// stolen waits until one of the pods (the agent is on one of them)
	// answers path with the container's answer, and returns it.
	stolen := func(t *testing.T, path string, ok func(string) bool, r *containerRun) string {
		defer func() {
			if t.Failed() {
				t.Logf("mirrord container's output:\n%s", r.out)
			}
		}()
		var body string
		waitUntil(t, 2*time.Minute, "the container to answer "+path+" stolen from a "+pyServ+" pod", func() bool {
			r.alive(t)
			for _, p := range pods {
				if b, err := podGet(p.Status.PodIP, path, nil); err == nil && ok(b) {
					body = b
					return true
				}
			}
			return false
		})
		return body
	}
	containers := func(t *testing.T) []string {
		cmd := exec.Command(runtime, "ps", "-a", "-q", "--filter", "label="+containerLabel)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s ps: %v", runtime, err)
		}
		return strings.Fields(string(out))
	}
	// noContainers checks that the runtime removed the session's
	// container (--rm).
	noContainers := func(t *testing.T) {
		waitUntil(t, 10*time.Second, "the container to be removed", func() bool { return len(containers(t)) == 0 })
	}

	t.Run("python", func(t *testing.T) {
		start := time.Now()
		r, stop := run(t, "--rm", "mirrord-e2e/python:e2e", "-c", containerPy)
		out := r.out
		waitUntil(t, 2*time.Minute, "the program's first line", func() bool { return r.alive(t) && strings.Contains(out.String(), "greeting=") })
		t.Logf("the program's first line %v after start", time.Since(start).Round(time.Millisecond))
		body := stolen(t, "/py", func(b string) bool { return strings.HasPrefix(b, "python-container") }, r)
		if body != "python-container hello from py-serv /py" {
			t.Errorf("stolen request answered %q", body)
		}
		t.Logf("first stolen answer %v after start", time.Since(start).Round(time.Millisecond))
		for _, w := range []string{"greeting=hello from py-serv", "backend-ip=" + backendIP, "backend=ok",
			"file={", "hello from the e2e test app's config file"} {
			if !strings.Contains(out.String(), w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
		if err := stop(); err == nil || !strings.Contains(err.Error(), "exit status 143") {
			// The program dies of the SIGTERM the runtime relays: 128+15.
			t.Errorf("mirrord container after SIGTERM: %v, want exit status 143; output:\n%s", err, out)
		}
		noContainers(t)
	})

	// checkStaticGo checks the static Go program's session through the
	// pod that answered it: the container's and the pod's env, a call to
	// a ClusterIP-only service by its DNS name (BACKEND_URL, from the
	// pod), the target's file.
	checkStaticGo := func(t *testing.T, mark string, r *containerRun) {
		body := stolen(t, "/env", func(b string) bool { return strings.Contains(b, mark) }, r)
		var vars map[string]string
		if err := json.Unmarshal([]byte(body), &vars); err != nil {
			t.Fatalf("GET /env: %v: %q", err, body)
		}
		if vars["CONTAINER_MARK"] != mark || vars["APP_GREETING"] != "hello from py-serv" {
			t.Errorf("the container's env: CONTAINER_MARK=%q APP_GREETING=%q; want %q and the pod's", vars["CONTAINER_MARK"], vars["APP_GREETING"], mark)
		}
		for _, p := range pods {
			if b, err := podGet(p.Status.PodIP, "/env", nil); err != nil || !strings.Contains(b, mark) {
				continue
			}
			call, err := podGet(p.Status.PodIP, "/call?path=/health", nil)
			var answer struct {
				Status  int
				Backend string
			}
			if err != nil || json.Unmarshal([]byte(call), &answer) != nil || answer.Status != 200 || answer.Backend != "ok\n" {
				t.Errorf("GET /call (the container calls backend:8080): %q, %v", call, err)
			}
			file, err := podGet(p.Status.PodIP, "/file", nil)
			if err != nil || !strings.Contains(file, "hello from the e2e test app's config file") {
				t.Errorf("GET /file (the target's /app/config.json, which the image lacks): %q, %v", file, err)
			}
		}
	}

	t.Run("static-go", func(t *testing.T) {
		// No command after the image: the image's entrypoint and
		// command (/testapp serve) run, on the pod's PORT (80).
		r, stop := run(t, "--rm", "-e", "CONTAINER_MARK=static-go", "mirrord-e2e/static-go:e2e")
		checkStaticGo(t, "static-go", r)
		// The test app stops cleanly on SIGTERM (the runtime's signal
		// proxy, then mirrord's in the container): status 0.
		if err := stop(); err != nil || !strings.Contains(r.out.String(), "py-serv: stopped") {
			t.Errorf("mirrord container after SIGTERM: %v, want the app stopped cleanly; output:\n%s", err, r.out)
		}
		noContainers(t)
	})

	t.Run("detach", func(t *testing.T) {
		// -d: the runtime's client returns once the container started;
		// mirrord keeps the session until the container stops. With the
		// host's network this time (the runs above have the engine's
		// default: no network for the test's engines).
		r, _ := run(t, "-d", "--rm", "--network", "host", "-e", "CONTAINER_MARK=detached", "mirrord-e2e/static-go:e2e")
		checkStaticGo(t, "detached", r)
		ids := containers(t)
		if len(ids) != 1 || !strings.Contains(r.out.String(), ids[0]) {
			t.Fatalf("%s ps: %q, want the one detached container, whose id the runtime printed; output:\n%s", runtime, ids, r.out)
		}
		start := time.Now()
		stop := exec.Command(runtime, "stop", ids[0])
		stop.Env = env
		if out, err := stop.CombinedOutput(); err != nil {
			t.Fatalf("%s stop: %v\n%s", runtime, err, out)
		}
		if ended, err := r.wait(30 * time.Second); !ended || err != nil {
			t.Fatalf("mirrord container -d after %s stop: ended %v, %v; want status 0; output:\n%s", runtime, ended, err, r.out)
		}
		t.Logf("mirrord ended %v after %s stop started", time.Since(start).Round(time.Millisecond), runtime)
		noContainers(t)
	})

	// Bad input is refused before anything starts in the cluster.
	t.Run("errors", func(t *testing.T) {
		jobs := len(c.agentJobs(t))
		for _, tt := range []struct {
			run  []string
			want string
		}{
			{[]string{"ps"}, "must be a container runtime's run"},
			{[]string{"run", "--no-such-option", "mirrord-e2e/python:e2e"}, "unknown option --no-such-option"},
			{[]string{"run", "mirrord-e2e/no-such-image:e2e"}, "mirrord-e2e/no-such-image:e2e"},
		} {
			cmd := exec.Command(buildMirrord(t), args(false, tt.run...)...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tt.want) {
				t.Errorf("%s %q: %v, want an error naming %q:\n%s", runtime, tt.run, err, tt.want, out)
			}
		}
		if n := len(c.agentJobs(t)); n > jobs {
			t.Errorf("bad input started an agent (%d jobs, %d before)", n, jobs)
		}
	})
}
