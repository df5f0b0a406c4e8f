//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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

// buildContainerImages builds the test images (testdata/container-images.sh)
// in the engine of env.
func buildContainerImages(t *testing.T, env []string) {
	t.Helper()
	testapp := filepath.Join(t.TempDir(), "testapp")
	build := exec.Command("go", "build", "-o", testapp, "./testapp")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the test app: %v\n%s", err, out)
	}
	images := exec.Command("testdata/container-images.sh", testapp)
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

// TestContainer: `mirrord container -t deploy/py-serv --steal -- docker
// run ...` with a Python image (a dynamic program: the preload library) and
// a static Go image FROM scratch (the sandbox, inside the container); each
// sees the pod's env, resolves and reaches a ClusterIP-only service, reads
// a file only the target has, and answers the traffic stolen from the
// pod. Then SIGTERM to mirrord stops the container (--rm: nothing left)
// and the agent goes away.
func TestContainer(t *testing.T) {
	c := newCluster(t)
	env := startDocker(t)
	waitUntil(t, time.Minute, "both "+pyServ+" pods to be ready", func() bool { return len(c.fixturePods(t, pyServ)) == 2 })
	pods := c.fixturePods(t, pyServ)
	backendIP := c.serviceIP(t, fixtureNamespace, "backend")

	buildContainerImages(t, env)

	// run starts mirrord container with the docker command and returns
	// its output and a function that stops it (SIGTERM, as a user's
	// Ctrl-C would be relayed) and returns its exit error.
	run := func(t *testing.T, docker ...string) (*syncBuffer, func() error) {
		out := &syncBuffer{}
		args := append([]string{"container", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage,
			"-t", "deploy/" + pyServ, "-n", fixtureNamespace, "--steal", "--", "docker"}, docker...)
		cmd := exec.Command(buildMirrord(t), args...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		var once sync.Once
		var result error
		stop := func() error {
			once.Do(func() {
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case result = <-exited:
				case <-time.After(30 * time.Second):
					cmd.Process.Kill()
					<-exited
					t.Errorf("mirrord container did not end within 30 s of SIGTERM; output:\n%s", out)
				}
			})
			return result
		}
		t.Cleanup(func() { stop() })
		return out, stop
	}
	// stolen waits until one of the pods (the agent is on one of them)
	// answers path with the container's answer, and returns it.
	stolen := func(t *testing.T, path string, ok func(string) bool, out *syncBuffer) string {
		defer func() {
			if t.Failed() {
				t.Logf("mirrord container's output:\n%s", out)
			}
		}()
		var body string
		waitUntil(t, 2*time.Minute, "the container to answer "+path+" stolen from a "+pyServ+" pod", func() bool {
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
	noContainers := func(t *testing.T, image string) {
		cmd := exec.Command("docker", "ps", "-a", "-q", "--filter", "ancestor="+image)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("containers of %s left after the session: %q, %v", image, out, err)
		}
	}

	t.Run("python", func(t *testing.T) {
		start := time.Now()
		out, stop := run(t, "run", "--rm", "mirrord-e2e/python:e2e", "-c", containerPy)
		waitUntil(t, 2*time.Minute, "the program's first line", func() bool { return strings.Contains(out.String(), "greeting=") })
		t.Logf("the program's first line %v after start", time.Since(start).Round(time.Millisecond))
		body := stolen(t, "/py", func(b string) bool { return strings.HasPrefix(b, "python-container") }, out)
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
			// The program dies of the SIGTERM docker relays: 128+15.
			t.Errorf("mirrord container after SIGTERM: %v, want exit status 143; output:\n%s", err, out)
		}
		noContainers(t, "mirrord-e2e/python:e2e")
	})

	t.Run("static-go", func(t *testing.T) {
		// No command after the image: the image's entrypoint and
		// command (/testapp serve) run, on the pod's PORT (80).
		out, stop := run(t, "run", "--rm", "-e", "CONTAINER_MARK=static-go", "mirrord-e2e/static-go:e2e")
		body := stolen(t, "/env", func(b string) bool { return strings.Contains(b, "CONTAINER_MARK") }, out)
		var vars map[string]string
		if err := json.Unmarshal([]byte(body), &vars); err != nil {
			t.Fatalf("GET /env: %v: %q", err, body)
		}
		if vars["CONTAINER_MARK"] != "static-go" || vars["APP_GREETING"] != "hello from py-serv" {
			t.Errorf("the container's env: CONTAINER_MARK=%q APP_GREETING=%q; want the container's and the pod's", vars["CONTAINER_MARK"], vars["APP_GREETING"])
		}
		// The static program's outgoing traffic, by the cluster's DNS
		// name of a ClusterIP-only service (BACKEND_URL, from the pod).
		for _, p := range pods {
			if b, err := podGet(p.Status.PodIP, "/env", nil); err != nil || !strings.Contains(b, "CONTAINER_MARK") {
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
		// The test app stops cleanly on SIGTERM (docker's signal
		// proxy, then mirrord's in the container): status 0.
		if err := stop(); err != nil || !strings.Contains(out.String(), "py-serv: stopped") {
			t.Errorf("mirrord container after SIGTERM: %v, want the app stopped cleanly; output:\n%s", err, out)
		}
		noContainers(t, "mirrord-e2e/static-go:e2e")
	})

	// Bad input is refused before anything starts in the cluster.
	t.Run("errors", func(t *testing.T) {
		jobs := len(c.agentJobs(t))
		for _, tt := range []struct {
			docker []string
			want   string
		}{
			{[]string{"ps"}, "must be a container runtime's run"},
			{[]string{"run", "--no-such-option", "mirrord-e2e/python:e2e"}, "unknown option --no-such-option"},
			{[]string{"run", "mirrord-e2e/no-such-image:e2e"}, "mirrord-e2e/no-such-image:e2e"},
		} {
			args := append([]string{"container", "--kubeconfig", c.kubeconfig, "--agent-image", agentImage,
				"-t", "deploy/" + pyServ, "-n", fixtureNamespace, "--", "docker"}, tt.docker...)
			cmd := exec.Command(buildMirrord(t), args...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tt.want) {
				t.Errorf("docker %q: %v, want an error naming %q:\n%s", tt.docker, err, tt.want, out)
			}
		}
		if n := len(c.agentJobs(t)); n > jobs {
			t.Errorf("bad input started an agent (%d jobs, %d before)", n, jobs)
		}
	})
	waitUntil(t, time.Minute, "agent jobs to be removed", func() bool { return len(c.agentJobs(t)) == 0 })
}
