//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestIDE replays what upstream's VS Code extension runs against the
// cluster (mirrord-vscode@1fa5c7b: src/api.ts, src/debugger.ts; the
// hermetic suite in integration/ide_test.go cites each call): ls with the
// rich output, ext for deploy/py-serv, then programs started with the
// returned environment, not under mirrord, as the IDE starts them. Once
// the last has exited, the session and its agent are gone.
func TestIDE(t *testing.T) {
	c := newCluster(t)
	bin := buildMirrord(t)
	// The IDE's environment: no --kubeconfig flag, the user's KUBECONFIG.
	base := append(os.Environ(), "KUBECONFIG="+c.kubeconfig, "MIRRORD_PROGRESS_MODE=json",
		"MIRRORD_PROGRESS_SUPPORT_IDE=true", "MIRRORD_IDE_NAME=vscode", "MIRRORD_LS_RICH_OUTPUT=true")

	// ls -n NS with MIRRORD_LS_TARGET_TYPES (src/api.ts:382-409).
	ls := exec.Command(bin, "ls", "-n", fixtureNamespace)
	ls.Env = append(base, `MIRRORD_LS_TARGET_TYPES=["deployment","rollout","pod"]`)
	out, err := ls.Output()
	if err != nil {
		t.Fatalf("ls: %v", err)
	}
	var rich struct {
		Targets []struct {
			Path      string `json:"path"`
			Available bool   `json:"available"`
		} `json:"targets"`
		CurrentNamespace string   `json:"current_namespace"`
		Namespaces       []string `json:"namespaces"`
	}
	if err := json.Unmarshal(out, &rich); err != nil || rich.CurrentNamespace != fixtureNamespace || !slices.Contains(rich.Namespaces, "kube-system") {
		t.Fatalf("ls rich output: %+v %v\n%s", rich, err, out)
	}
	var paths []string
	for _, tg := range rich.Targets {
		paths = append(paths, tg.Path)
		if !tg.Available || !(strings.HasPrefix(tg.Path, "deployment/") || strings.HasPrefix(tg.Path, "pod/") || strings.HasPrefix(tg.Path, "rollout/")) {
			t.Errorf("ls: target %+v not of the types asked for", tg)
		}
	}
	if !slices.Contains(paths, "deployment/"+pyServ) {
		t.Fatalf("ls: no deployment/%s in %v", pyServ, paths)
	}

	// A Go program as the IDE builds it (cgo: dynamically linked).
	goServer := filepath.Join(t.TempDir(), "loopserver")
	build := exec.Command("go", "build", "-o", goServer, "../integration/testdata/loopserver")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building loopserver: %v\n%s", err, out)
	}

	cfg := filepath.Join(t.TempDir(), "mirrord.json")
	os.WriteFile(cfg, []byte(`{"agent": {"image": "`+agentImage+`", "ttl": 1}, "internal_proxy": {"idle_timeout": 2}}`), 0o644)
	ext := exec.Command(bin, "ext", "-t", "deployment/"+pyServ, "-f", cfg)
	ext.Env = append(base, "MIRRORD_TARGET_NAMESPACE="+fixtureNamespace, "MIRRORD_IGNORE_DEBUGGER_PORTS=45000-65535")
	var stderr bytes.Buffer
	ext.Stderr = &stderr
	stdout, _ := ext.StdoutPipe()
	if err := ext.Start(); err != nil {
		t.Fatal(err)
	}
	var execution struct {
		Environment map[string]string `json:"environment"`
		EnvToUnset  []string          `json:"env_to_unset"`
	}
	ok := false
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m struct {
			Type    string `json:"type"`
			Name    string `json:"name"`
			Success bool   `json:"success"`
			Message any    `json:"message"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("ext printed a line that is not JSON: %q", sc.Text())
		}
		if m.Type == "FinishedTask" && m.Name == "mirrord preparing to launch" && m.Success {
			s, _ := m.Message.(string)
			if err := json.Unmarshal([]byte(s), &execution); err != nil {
				t.Fatalf("execution: %v: %q", err, s)
			}
			ok = true
		}
	}
	if err := ext.Wait(); err != nil || !ok {
		t.Fatalf("ext: %v (success line: %v); stderr: %s", err, ok, stderr.String())
	}
	env := append(os.Environ(), "MIRRORD_IGNORE_DEBUGGER_PORTS=45000-65535")
	for k, v := range execution.Environment {
		env = append(env, k+"="+v)
	}
	env = slices.DeleteFunc(env, func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(execution.EnvToUnset, k)
	})

	run := func(t *testing.T, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		return string(out)
	}
	t.Run("python", func(t *testing.T) {
		out := run(t, "python3", "-c", `
import os, urllib.request
print("greeting=" + os.environ.get("APP_GREETING", ""))
print("file-ok" if "hello from the e2e test app's config file" in open("/app/config.json").read() else "file-missing")
urllib.request.urlopen("http://backend:8080/health", timeout=10).read(); print("backend-ok")`)
		for _, w := range []string{"greeting=hello from py-serv", "file-ok", "backend-ok"} {
			if !strings.Contains(out, w) {
				t.Errorf("no %q in:\n%s", w, out)
			}
		}
	})
	t.Run("go", func(t *testing.T) {
		outFile := filepath.Join(t.TempDir(), "out")
		w, _ := os.Create(outFile)
		defer w.Close()
		cmd := exec.Command(goServer, "127.0.0.1:0")
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		base := "http://" + waitListening(t, outFile)
		if got := getBody(t, base+"/env?k=APP_GREETING"); !strings.Contains(got, "hello from py-serv") {
			t.Errorf("env: %q", got)
		}
		if got := getBody(t, base+"/get?url="+url.QueryEscape("http://backend:8080/health")); got == "" || strings.Contains(got, "error") {
			t.Errorf("backend from the Go program: %q", got)
		}
	})
	waitUntil(t, 90*time.Second, "the ext session to end and its agent job to be removed", func() bool {
		procs, _ := exec.Command("pgrep", "-f", "serve-session").Output()
		return len(strings.TrimSpace(string(procs))) == 0 && len(c.agentJobs(t)) == 0
	})
}
