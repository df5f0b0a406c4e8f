package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestLocalAgentToken: the root agent that `mirrord exec -t pid/PID`
// starts on this machine's loopback serves only its own session. Another
// user (nobody) who runs mirrord against its port is refused — and, with
// the token, is not (so the refusal is the token's doing) — and cannot
// learn the token: it is in the agent's environment, which only root can
// read, not in its arguments, nor in the CLI's log or output.
func TestLocalAgentToken(t *testing.T) {
	f := newFixture(t)
	done := filepath.Join(f.dir, "done")
	logFile := filepath.Join(f.dir, "cli.log")
	// The program proves the session works (the target's environment),
	// then waits for the test.
	script := `echo "env $SECRET_TOKEN"; i=0; while [ ! -e "$0" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done`
	cmd := exec.CommandContext(ctx(t), mirrordBin, "exec", "-t", fmt.Sprintf("pid/%d", f.podPID), "--", "sh", "-c", script, done)
	cmd.Env = append(os.Environ(), "MIRRORD_LOG_LEVEL=debug", "MIRRORD_LOG_FILE="+logFile)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		os.WriteFile(done, nil, 0o644)
		<-exited
	})

	// The agent it started, and its port.
	var agentPID, addr string
	waitFor(t, "the local agent to listen", func() bool {
		b, _ := exec.Command("pgrep", "-f", fmt.Sprintf("agent --target-pid %d ", f.podPID)).Output()
		agentPID = strings.TrimSpace(string(b))
		if agentPID == "" || strings.Contains(agentPID, "\n") {
			return false
		}
		b, _ = exec.Command("ss", "-Hltnp").Output()
		m := regexp.MustCompile(`(127\.0\.0\.1:\d+) .*pid=` + agentPID + `,`).FindStringSubmatch(string(b))
		if m == nil {
			return false
		}
		addr = m[1]
		return true
	})
	environ, err := os.ReadFile("/proc/" + agentPID + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	var token string
	for kv := range bytes.SplitSeq(environ, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("MIRRORD_AGENT_TOKEN=")); ok {
			token = string(v)
		}
	}
	if len(token) < 16 {
		t.Errorf("the local agent has no session token (%q)", token)
	}
	cmdline, _ := os.ReadFile("/proc/" + agentPID + "/cmdline")
	if token != "" && bytes.Contains(cmdline, []byte(token)) {
		t.Errorf("the token is in the agent's arguments, which every user can read: %q", cmdline)
	}

	// nobody runs mirrord (a copy it may execute) against the agent.
	pub, err := os.MkdirTemp("", "mirrord-pub-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pub) })
	os.Chmod(pub, 0o777)
	bin, cache := filepath.Join(pub, "bin", "mirrord"), filepath.Join(pub, "cache")
	os.Mkdir(filepath.Dir(bin), 0o755)
	os.Mkdir(cache, 0o700)
	os.Chown(cache, 65534, 65534)
	if b, err := os.ReadFile(mirrordBin); err != nil || os.WriteFile(bin, b, 0o755) != nil {
		t.Fatalf("copy mirrord: %v", err)
	}
	asNobody := func(env ...string) (string, error) {
		c := exec.CommandContext(ctx(t), "setpriv", append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "env", "HOME=" + pub, "XDG_CACHE_HOME=" + cache}, env...)...)
		c.Args = append(c.Args, bin, "exec", "--agent-addr", addr, "--", "sh", "-c", `echo "env $SECRET_TOKEN"`)
		c.Env = []string{"PATH=/usr/bin:/bin"}
		b, err := c.CombinedOutput()
		return string(b), err
	}
	if other, err := asNobody(); err == nil || strings.Contains(other, "env "+secret) {
		t.Errorf("another user used the session's agent without its token (err %v):\n%s", err, other)
	} else if !strings.Contains(other, "wrong session token") {
		t.Errorf("another user's mirrord failed, but not for the token:\n%s", other)
	}
	if token == "" {
		return
	}
	if withToken, err := asNobody("MIRRORD_AGENT_TOKEN=" + token); err != nil || !strings.Contains(withToken, "env "+secret) {
		t.Errorf("with the token, the same command failed (so the test proves nothing): %v\n%s", err, withToken)
	}
	if b, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", "/proc/"+agentPID+"/environ").CombinedOutput(); err == nil {
		t.Errorf("another user can read the agent's environment:\n%s", b)
	}

	os.WriteFile(done, nil, 0o644)
	<-exited
	if waitErr != nil {
		t.Fatalf("%v\n%s", waitErr, out.String())
	}
	mustContain(t, out.String(), "env "+secret)
	log, _ := os.ReadFile(logFile)
	if len(log) == 0 {
		t.Error("the CLI wrote no log")
	}
	for name, b := range map[string][]byte{"log": log, "output": out.Bytes()} {
		if bytes.Contains(b, []byte(token)) {
			t.Errorf("the token is in the CLI's %s:\n%s", name, b)
		}
	}
}
