package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func writeConfig(t *testing.T, json string) string {
	p := filepath.Join(t.TempDir(), "mirrord.json")
	if err := os.WriteFile(p, []byte(json), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustContain(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

// TestOutgoingDNSEnv is the main path: a dynamic binary (curl), a static
// Go binary and Python get the pod's DNS, network and environment.
func TestOutgoingDNSEnv(t *testing.T) {
	f := newFixture(t)
	f.startAgent()

	want := []string{"dns " + svcIP, "tcp " + svcBody, "udp echo:ping", "env " + secret}
	eachEngine(t, func(t *testing.T, engine ...string) {
		run := func(args ...string) (string, error) {
			return f.mirrord(ctx(t), nil, append(engine, args...)...)
		}
		t.Run("curl", func(t *testing.T) {
			out, err := run("--", "curl", "-sS", "--max-time", "10", "http://"+svcName+":8080/")
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			mustContain(t, out, svcBody)
		})
		t.Run("curl short name through search domains", func(t *testing.T) {
			out, err := run("--", "curl", "-sS", "--max-time", "10", "http://db:8080/")
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			mustContain(t, out, svcBody)
		})
		t.Run("python", func(t *testing.T) {
			py, err := exec.LookPath("python3")
			if err != nil {
				t.Fatal("python3 is needed for this test")
			}
			out, err := run("--", py, "testdata/pyclient.py", svcName)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			mustContain(t, out, want...)
		})
		t.Run("node", func(t *testing.T) {
			node, err := exec.LookPath("node")
			if err != nil {
				t.Fatal("node is needed for this test (make deps installs it)")
			}
			out, err := run("--", node, "testdata/nodeclient.js", svcName)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			mustContain(t, out, want...)
		})
		t.Run("hostname", func(t *testing.T) {
			out, err := run("--", "sh", "-c", "hostname; cat /etc/hostname")
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if out != podHostname+"\n"+podHostname+"\n" {
				t.Errorf("hostname and /etc/hostname = %q, want %s twice", out, podHostname)
			}
		})
		t.Run("getent (glibc resolver)", func(t *testing.T) {
			out, err := run("--", "sh", "-c", "getent hosts "+svcName)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			mustContain(t, out, svcIP)
		})
	})
	t.Run("static go binary", func(t *testing.T) {
		out, err := f.mirrord(ctx(t), nil, "--", goclientBin, svcName)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, append(want, "txt hello", "hostname "+podHostname)...)
	})
}

// TestOutgoingFilter: a local filter sends one destination to this
// machine's network while the rest goes through the pod.
func TestOutgoingFilter(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	eachEngine(t, func(t *testing.T, engine ...string) {
		run := func(env []string, args ...string) (string, error) {
			return f.mirrord(ctx(t), env, append(engine, args...)...)
		}

		cfg := writeConfig(t, `{"feature": {"network": {"outgoing": {"filter": {"local": ["`+localIP+`"]}}}}}`)
		out, err := run(nil, "-f", cfg, "--", "sh", "-c",
			"curl -sS --max-time 10 http://"+localIP+":8080/; echo; curl -sS --max-time 10 http://"+svcName+":8080/")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, localBody, svcBody)

		// Without the filter, the local address goes to the pod, which has
		// no route to it.
		out, err = run(nil, "--", "curl", "-sS", "--max-time", "5", "http://"+localIP+":8080/")
		if err == nil || strings.Contains(out, localBody) {
			t.Errorf("without a filter %s was reached locally: %v\n%s", localIP, err, out)
		}

		// A remote filter: only the svc port goes remote, UDP to the local
		// address stays local.
		cfg = writeConfig(t, `{"feature": {"network": {"outgoing": {"filter": {"remote": ["tcp://`+svcName+`:8080"]}}}}}`)
		out, err = run(nil, "-f", cfg, "--", "sh", "-c",
			"curl -sS --max-time 10 http://"+svcName+":8080/; echo; curl -sS --max-time 10 http://"+localIP+":8080/")
		if err != nil {
			t.Fatalf("remote filter: %v\n%s", err, out)
		}
		mustContain(t, out, svcBody, localBody)
	})
}

// TestDNSFilter: a name in dns.filter.local resolves with this machine's
// resolver, which here answers with the local address.
func TestDNSFilter(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	cfg := writeConfig(t, `{"feature": {"network": {
		"dns": {"filter": {"local": ["`+svcName+`"]}},
		"outgoing": {"filter": {"local": ["`+localIP+`"]}}}}}`)
	out, err := f.mirrord(ctx(t), nil, "-f", cfg, "--", goclientBin, svcName)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// The local server's connections are this machine's own (the sandbox
	// moved the program's sockets here): the program's end is this
	// machine's address on the local link, not the sandbox's.
	want := []string{"dns " + localIP, "tcp " + localBody, "udp local-echo:ping", "tcp from " + hostIP, "udp from " + hostIP}
	mustContain(t, out, want...)
	// The same as the child of a program under the preload (its sandbox
	// asks the parent's session where each connect goes).
	out, err = f.mirrord(ctx(t), nil, "-f", cfg, "--", "sh", "-c", goclientBin+" "+svcName)
	if err != nil {
		t.Fatalf("under a preloaded shell: %v\n%s", err, out)
	}
	mustContain(t, out, want...)

	// --no-remote-dns: everything resolves locally.
	out, err = f.mirrord(ctx(t), nil, "--no-remote-dns", "--", "getent", "hosts", "localonly.test")
	if err != nil {
		t.Fatalf("--no-remote-dns: %v\n%s", err, out)
	}
	mustContain(t, out, localIP)
}

// TestEnv checks include/exclude/override/mapping/unset/env_file.
func TestEnv(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	eachEngine(t, func(t *testing.T, engine ...string) {
		run := func(env []string, args ...string) (string, error) {
			return f.mirrord(ctx(t), env, append(engine, args...)...)
		}
		envFile := filepath.Join(t.TempDir(), ".env")
		os.WriteFile(envFile, []byte("FROM_FILE=yes\nDB_HOST=file-db\n"), 0o600)
		tests := []struct {
			name  string
			cfg   string
			env   []string
			args  []string
			wants []string
			nots  []string
		}{
			{"defaults", `{}`, []string{"LOCAL_ONLY=1"}, nil,
				[]string{"SECRET_TOKEN=" + secret, "DB_HOST=db", "LOCAL_ONLY=1"}, []string{"PATH=/remote/bin"}},
			{"include", `{"feature": {"env": {"include": "DB_*"}}}`, nil, nil,
				[]string{"DB_HOST=db", "DB_PASSWORD=pw"}, []string{"SECRET_TOKEN="}},
			{"exclude flag", `{}`, nil, []string{"-x", "DB_PASSWORD;SECRET_*"},
				[]string{"DB_HOST=db"}, []string{"DB_PASSWORD=", "SECRET_TOKEN="}},
			{"override, mapping, unset, env file", `{"feature": {"env": {
				"override": {"DB_HOST": "localhost"}, "mapping": {".+_TIMEOUT": "1000"},
				"unset": ["local_unset"], "env_file": "` + envFile + `"}}}`, []string{"LOCAL_UNSET=x"}, nil,
				[]string{"DB_HOST=localhost", "CONNECT_TIMEOUT=1000", "READ_TIMEOUT=1000", "FROM_FILE=yes"}, []string{"LOCAL_UNSET="}},
			{"env off", `{"feature": {"env": false}}`, nil, nil, nil, []string{"SECRET_TOKEN="}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				args := append([]string{"-f", writeConfig(t, tt.cfg)}, tt.args...)
				args = append(args, "--", "env")
				out, err := run(tt.env, args...)
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				lines := "\n" + out
				for _, w := range tt.wants {
					if !strings.Contains(lines, "\n"+w+"\n") {
						t.Errorf("env lacks %s:\n%s", w, out)
					}
				}
				for _, n := range tt.nots {
					if strings.Contains(lines, "\n"+n) {
						t.Errorf("env has %s:\n%s", n, out)
					}
				}
			})
		}
	})
}

// TestExitAndSignals: the exit status and signals pass through.
func TestExitAndSignals(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	_, err := f.mirrord(ctx(t), nil, "--", "sh", "-c", "exit 7")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Errorf("exit status: %v, want 7", err)
	}
	out, err := f.mirrord(ctx(t), nil, "--", "no-such-command-xyz")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 127 {
		t.Errorf("missing command: %v, want exit 127\n%s", err, out)
	}
	mustContain(t, out, "no-such-command-xyz")

	// SIGTERM to mirrord reaches the program, which reports it.
	script := `trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.1; done`
	cmd := exec.Command("unshare", "-m", "--", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`,
		f.resolvConf, mirrordBin, "exec", "--agent-addr", f.agentAddr, "--", "sh", "-c", script)
	var buf strings.Builder
	cmd.Stdout = &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "program ready", func() bool { return strings.Contains(buf.String(), "ready") })
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 || !strings.Contains(buf.String(), "got-term") {
		t.Errorf("SIGTERM: %v, output %q; want exit 3 after got-term", err, buf.String())
	}
}

// TestKillLeavesNothing: SIGKILL on the CLI leaves no program, no agent,
// no sandbox behind. The agent cannot tell a killed CLI from a dropped
// connection, so it waits agent.reconnect_timeout (here 2 s) before its
// TTL starts.
func TestKillLeavesNothing(t *testing.T) {
	f := newFixture(t)
	agent := f.startAgent("--ttl", "1s")
	cfg := writeConfig(t, `{"agent": {"reconnect_timeout": 2}}`)
	// A sleep with a duration no other process uses, to find it by.
	marker := fmt.Sprintf("sleep %d", 100000+time.Now().UnixNano()%100000)
	outFile := filepath.Join(t.TempDir(), "out")
	out, err := os.Create(outFile)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("unshare", "-m", "--", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`,
		f.resolvConf, mirrordBin, "exec", "--agent-addr", f.agentAddr, "-f", cfg, "--", "sh", "-c", "echo ready; exec "+marker)
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "program ready", func() bool {
		b, _ := os.ReadFile(outFile)
		return strings.Contains(string(b), "ready")
	})
	sandboxNetns := func() string {
		pid, _ := exec.Command("pgrep", "-f", "^"+marker+"$").Output()
		link, _ := os.Readlink("/proc/" + strings.TrimSpace(string(pid)) + "/ns/net")
		return link
	}
	if sandboxNetns() == "" {
		t.Fatal("cannot find the program")
	}
	// unshare and sh exec'd mirrord: the pid is mirrord's.
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- agent.Wait() }()
	select {
	case <-done:
		t.Logf("agent exited %v after the CLI was killed", time.Since(start).Round(time.Millisecond))
	case <-time.After(2*time.Second + 5*time.Second):
		t.Error("agent still running 5 s after its reconnect wait (2 s) after the CLI was killed")
	}
	// The program was the last process in the sandbox's namespaces: when
	// it is gone, so are they and the TUN device.
	waitFor(t, "the program to be gone", func() bool {
		out, _ := exec.Command("pgrep", "-f", "^"+marker+"$").Output()
		return len(strings.TrimSpace(string(out))) == 0
	})
}

// TestLocalPidTarget: with -t pid/PID the CLI starts the agent itself.
func TestLocalPidTarget(t *testing.T) {
	f := newFixture(t)
	cmd := exec.CommandContext(ctx(t), "unshare", "-m", "--", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`,
		f.resolvConf, mirrordBin, "exec", "-t", fmt.Sprintf("pid/%d", f.podPID), "--", goclientBin, svcName)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	mustContain(t, string(out), "dns "+svcIP, "tcp "+svcBody, "udp echo:ping", "env "+secret)
	// The agent it started goes away by itself.
	waitFor(t, "the local agent to exit", func() bool {
		out, _ := exec.Command("pgrep", "-f", fmt.Sprintf("agent --target-pid %d ", f.podPID)).Output()
		return len(strings.TrimSpace(string(out))) == 0
	})
}

// TestGoTestExec runs a package's tests with `go test -exec mirrord`.
func TestGoTestExec(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	// The pod's files live under /tmp, which is local by default.
	podFilesCfg := writeConfig(t, `{"feature": {"fs": {"read_only": ["^`+f.podFiles+`"]}}}`)
	goTest := func(env []string, args ...string) (string, error) {
		full := append([]string{"-m", "--", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`,
			f.resolvConf, "go", "test", "-count=1"}, args...)
		cmd := exec.CommandContext(ctx(t), "unshare", full...)
		cmd.Dir = "testdata/samplepkg"
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(mirrordBin)+":"+os.Getenv("PATH"), "MIRRORD_AGENT_ADDR="+f.agentAddr, "GOFLAGS=-mod=mod",
			"MIRRORD_CONFIG_FILE="+podFilesCfg, "SAMPLE_POD_FILE="+f.podFiles+"/config.yaml")
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := goTest(nil, "-exec", "mirrord", "-run", "TestSeesThePod", "-v", ".")
	if err != nil {
		t.Fatalf("go test -exec mirrord: %v\n%s", err, out)
	}
	mustContain(t, out, "--- PASS: TestSeesThePod")

	out, err = goTest(nil, "-exec", "mirrord exec --agent-addr "+f.agentAddr+" --", "-run", "TestSeesThePod", ".")
	if err != nil {
		t.Fatalf("go test -exec 'mirrord exec ... --': %v\n%s", err, out)
	}

	// Without mirrord the same test fails: it needs the pod.
	if out, err := goTest(nil, "-run", "TestSeesThePod", "."); err == nil {
		t.Fatalf("the sample test passed without mirrord:\n%s", out)
	}

	out, err = goTest([]string{"SAMPLE_FAIL=1"}, "-exec", "mirrord", "-run", "TestFails", ".")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("failing test: %v, want exit 1\n%s", err, out)
	}
	mustContain(t, out, "failing as asked", "FAIL")

	out, err = goTest([]string{"SAMPLE_SLOW=1"}, "-exec", "mirrord", "-run", "TestSlow", "-timeout", "2s", ".")
	if err == nil {
		t.Fatalf("timed-out test passed:\n%s", out)
	}
	mustContain(t, out, "panic: test timed out", "goroutine ")
}

// TestHandStartedAgentServes: an agent started by hand (README: "Running
// without Kubernetes") serves until stopped, so that `go test -exec
// mirrord ./...` reaches it for every package, however long the compiles
// between them take; before, it ended one second after its first client.
func TestHandStartedAgentServes(t *testing.T) {
	f := newFixture(t)
	agent := f.startAgent()
	for i := range 2 {
		out, err := f.mirrord(t.Context(), nil, "--", "sh", "-c", "echo token=$SECRET_TOKEN")
		if err != nil || !strings.Contains(out, "token="+secret) {
			t.Fatalf("run %d: %v\n%s", i+1, err, out)
		}
		time.Sleep(2500 * time.Millisecond)
	}
	if agent.ProcessState != nil || agent.Process.Signal(syscall.Signal(0)) != nil {
		t.Fatal("the agent ended without being stopped")
	}
}
