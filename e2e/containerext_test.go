//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestContainerExt replays what upstream's IntelliJ plugin does for a run
// configuration in a Docker container (mirrord-intellij@612bf75,
// MirrordApi.kt MirrordContainerExtTask and MirrordExecManager.containerStart):
// `mirrord container-ext -t TARGET -f CONFIG` with the JSON progress, the
// execution read from the successful "mirrord preparing to launch", then
// the IDE's own `docker run` with extra_args (and the plugin's
// MIRRORD_IGNORE_DEBUGGER_PORTS) added to its options and the image's
// entrypoint untouched. The Python program (dynamic: the preload library)
// sees the target's env, resolves and reaches a ClusterIP-only service,
// reads a file only the pod has and answers requests stolen from the pod.
// Once its container has gone, so have the sidecar, the session process,
// the run directory and the agent.
func TestContainerExt(t *testing.T) {
	c := newCluster(t)
	env := startDocker(t)
	bin := buildMirrord(t)
	waitUntil(t, time.Minute, "both "+pyServ+" pods to be ready", func() bool { return len(c.fixturePods(t, pyServ)) == 2 })
	pods := c.fixturePods(t, pyServ)
	backendIP := c.serviceIP(t, fixtureNamespace, "backend")
	buildContainerImages(t, "docker", env)

	base := append(env, "KUBECONFIG="+c.kubeconfig, "MIRRORD_PROGRESS_MODE=json", "MIRRORD_PROGRESS_SUPPORT_IDE=true",
		"MIRRORD_IDE_NAME=intellij", "MIRRORD_EXT_PRINT_CONFIG=TRUE", "MIRRORD_TARGET_NAMESPACE="+fixtureNamespace)
	cfg := filepath.Join(t.TempDir(), "mirrord.json")
	os.WriteFile(cfg, []byte(`{"agent": {"image": "`+agentImage+`", "ttl": 1},
		"feature": {"network": {"incoming": {"mode": "steal"}}},
		"internal_proxy": {"start_idle_timeout": 60, "idle_timeout": 2}}`), 0o644)
	runDirs := func() []string {
		m, _ := filepath.Glob(filepath.Join(os.TempDir(), "mirrord-container-ext-*"))
		return m
	}
	sidecars := func() string {
		cmd := exec.Command("docker", "ps", "-a", "-q", "--filter", "label=dev.mirrord-go.sidecar")
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("docker ps: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	sessions := func() string {
		out, _ := exec.Command("pgrep", "-f", "container-ext --serve-session").Output()
		return strings.TrimSpace(string(out))
	}
	if s := sidecars(); s != "" {
		t.Fatalf("sidecars left by an earlier run: %s", s)
	}
	dirsBefore := len(runDirs())

	// containerExt runs container-ext as the plugin does and returns its
	// answer, every line of its stdout parsed as the plugin parses it.
	type execution struct {
		Runtime      string   `json:"runtime"`
		ExtraArgs    []string `json:"extra_args"`
		UsesOperator *bool    `json:"uses_operator"`
	}
	containerExt := func(t *testing.T, args ...string) (*execution, string, error) {
		start := time.Now()
		cmd := exec.Command(bin, append([]string{"container-ext"}, args...)...)
		cmd.Env = base
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var got *execution
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m struct {
				Type    string `json:"type"`
				Name    string `json:"name"`
				Success *bool  `json:"success"`
				Message any    `json:"message"`
			}
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil || m.Type == "" {
				t.Errorf("container-ext printed a line the plugin cannot parse: %q", sc.Text())
				continue
			}
			if m.Type == "FinishedTask" && m.Name == "mirrord preparing to launch" && m.Success != nil && *m.Success {
				s, _ := m.Message.(string)
				got = &execution{}
				if err := json.Unmarshal([]byte(s), got); err != nil {
					t.Fatalf("the execution: %v: %q", err, s)
				}
			}
		}
		err := cmd.Wait()
		t.Logf("container-ext answered in %v", time.Since(start).Round(time.Millisecond))
		return got, stderr.String(), err
	}

	t.Run("python", func(t *testing.T) {
		ex, stderr, err := containerExt(t, "-t", "deployment/"+pyServ, "-f", cfg)
		if err != nil || ex == nil {
			t.Fatalf("container-ext: %v, answer %+v; stderr: %s", err, ex, stderr)
		}
		if ex.Runtime != "docker" || ex.UsesOperator == nil || *ex.UsesOperator || len(ex.ExtraArgs) == 0 {
			t.Fatalf("container-ext's answer: %+v", ex)
		}
		t.Logf("extra_args: %q", ex.ExtraArgs)
		if s := sidecars(); s == "" {
			t.Fatalf("no sidecar runs after container-ext answered")
		}
		// The plugin adds its variable after extra_args, then the run
		// configuration's own options; the image keeps its entrypoint
		// (python3) and the IDE gives the command.
		args := append([]string{"run", "--rm", "--name", "mirrord-e2e-cext"}, ex.ExtraArgs...)
		args = append(args, "-e", "MIRRORD_IGNORE_DEBUGGER_PORTS=35000-65535", "mirrord-e2e/python:e2e", "-c", containerPy)
		out := &syncBuffer{}
		run := exec.Command("docker", args...)
		run.Env = env
		run.Stdout, run.Stderr = out, out
		if err := run.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- run.Wait() }()
		kill := func() {
			k := exec.Command("docker", "kill", "mirrord-e2e-cext")
			k.Env = env
			k.Run()
		}
		defer kill()
		defer func() {
			if t.Failed() {
				t.Logf("the container's output:\n%s", out)
			}
		}()
		var body string
		waitUntil(t, 2*time.Minute, "the container to answer /py stolen from a "+pyServ+" pod", func() bool {
			for _, p := range pods {
				if b, err := podGet(p.Status.PodIP, "/py", nil); err == nil && strings.HasPrefix(b, "python-container") {
					body = b
					return true
				}
			}
			return false
		})
		if body != "python-container hello from py-serv /py" {
			t.Errorf("stolen request answered %q", body)
		}
		for _, w := range []string{"greeting=hello from py-serv", "backend-ip=" + backendIP, "backend=ok",
			"file={", "hello from the e2e test app's config file"} {
			if !strings.Contains(out.String(), w) {
				t.Errorf("output lacks %q:\n%s", w, out)
			}
		}
		// The IDE stops the run: the container goes, and with it the
		// session (idle_timeout 2 s).
		kill()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			t.Fatalf("the container did not stop within 30 s of docker kill")
		}
		ended := time.Now()
		waitUntil(t, 60*time.Second, "the sidecar, the session process and the run directory to be gone", func() bool {
			return sidecars() == "" && sessions() == "" && len(runDirs()) == dirsBefore
		})
		t.Logf("session gone %v after the container", time.Since(ended).Round(time.Millisecond))
	})

	// Without MIRRORD_PROGRESS_MODE the answer is one plain JSON line;
	// when no container comes, the session ends after
	// internal_proxy.start_idle_timeout and leaves nothing.
	t.Run("plain-no-container", func(t *testing.T) {
		quick := filepath.Join(t.TempDir(), "mirrord.json")
		os.WriteFile(quick, []byte(`{"agent": {"image": "`+agentImage+`", "ttl": 1}, "internal_proxy": {"start_idle_timeout": 3}}`), 0o644)
		cmd := exec.Command(bin, "container-ext", "-t", "deployment/"+pyServ, "-f", quick)
		for _, kv := range base {
			if !strings.HasPrefix(kv, "MIRRORD_PROGRESS_MODE=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("container-ext: %v; stderr: %s", err, stderr.String())
		}
		answered := time.Now()
		var ex execution
		if err := json.Unmarshal(out, &ex); err != nil || ex.Runtime != "docker" || len(ex.ExtraArgs) == 0 || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Fatalf("plain answer %q: %v", out, err)
		}
		if sidecars() == "" {
			t.Fatalf("no sidecar after the answer")
		}
		waitUntil(t, 30*time.Second, "the unused session to end", func() bool {
			return sidecars() == "" && sessions() == "" && len(runDirs()) == dirsBefore
		})
		t.Logf("the unused session ended %v after the answer (start_idle_timeout 3 s)", time.Since(answered).Round(time.Millisecond))
	})

	// SIGTERM to the session process (the user ends it) removes the
	// sidecar and the run directory at once.
	t.Run("sigterm", func(t *testing.T) {
		ex, stderr, err := containerExt(t, "-t", "deployment/"+pyServ, "-f", cfg)
		if err != nil || ex == nil {
			t.Fatalf("container-ext: %v; stderr: %s", err, stderr)
		}
		pids := strings.Fields(sessions())
		if len(pids) != 1 || sidecars() == "" {
			t.Fatalf("session processes %q, sidecars %q; want one of each", pids, sidecars())
		}
		pid, _ := strconv.Atoi(pids[0])
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		waitUntil(t, 30*time.Second, "the session to end after SIGTERM", func() bool {
			return sidecars() == "" && sessions() == "" && len(runDirs()) == dirsBefore
		})
		t.Logf("the session ended %v after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	})

	// Bad input: one JSON error on stderr, as the plugin parses it, and
	// nothing left behind.
	t.Run("errors", func(t *testing.T) {
		jobs := len(c.agentJobs(t))
		for _, tt := range []struct {
			args []string
			want string
		}{
			{[]string{"-t", "deployment/no-such-deploy", "-f", cfg}, "no-such-deploy"},
			{[]string{"-t", "deployment/" + pyServ, "-f", "/no/such/config.json"}, "/no/such/config.json"},
		} {
			ex, stderr, err := containerExt(t, tt.args...)
			if err == nil || ex != nil {
				t.Errorf("%q: %v, answer %+v; want a failure", tt.args, err, ex)
			}
			line := strings.TrimSpace(stderr)
			var rep struct {
				Message  string   `json:"message"`
				Severity string   `json:"severity"`
				Causes   []string `json:"causes"`
			}
			if !strings.HasPrefix(line, "Error: ") || json.Unmarshal([]byte(strings.TrimPrefix(line, "Error: ")), &rep) != nil ||
				!strings.Contains(rep.Message, tt.want) || rep.Severity != "error" {
				t.Errorf("%q: stderr %q, want one JSON error naming %q", tt.args, stderr, tt.want)
			}
		}
		if s := sidecars(); s != "" {
			t.Errorf("sidecars left after failures: %s", s)
		}
		if n := len(runDirs()); n != dirsBefore {
			t.Errorf("run directories left after failures: %q", runDirs())
		}
		if s := sessions(); s != "" {
			t.Errorf("session processes left after failures: %s", s)
		}
		if n := len(c.agentJobs(t)); n > jobs {
			t.Errorf("a failure left an agent (%d jobs, %d before)", n, jobs)
		}
	})
	waitUntil(t, time.Minute, "agent jobs to be removed", func() bool { return len(c.agentJobs(t)) == 0 })
}
