package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The IDE plugins' conformance suite: what upstream's VS Code extension
// (metalbear-co/mirrord-vscode) and IntelliJ plugin
// (metalbear-co/mirrord-intellij) run and parse, replayed call by call
// against the real binary, then the program started with the returned
// environment as the IDE starts it (not under mirrord), against the fake
// pod. References are repo@commit:path:line of the plugins' sources:
//
//	vscode   = mirrord-vscode@1fa5c7ba77378af08393597b18e2c2e55dcdd312
//	intellij = mirrord-intellij@612bf75636e28c86473ee0ccec03cff135679d89

// vscodeEnv is what VS Code adds to every CLI call (vscode src/api.ts:265-277).
var vscodeEnv = []string{"MIRRORD_PROGRESS_MODE=json", "MIRRORD_PROGRESS_SUPPORT_IDE=true",
	"MIRRORD_IDE_NAME=vscode", "MIRRORD_LS_RICH_OUTPUT=true"}

// intellijEnv is IntelliJ's (intellij core/MirrordApi.kt:752-802).
var intellijEnv = []string{"MIRRORD_EXT_PRINT_CONFIG=TRUE", "MIRRORD_PROGRESS_MODE=json",
	"MIRRORD_PROGRESS_SUPPORT_IDE=true", "MIRRORD_IDE_NAME=intellij"}

// extExecution is the message of the final FinishedTask as the plugins
// read it (vscode src/api.ts:218-226; intellij core/MirrordApi.kt:136-141).
type extExecution struct {
	Environment  map[string]string `json:"environment"`
	PatchedPath  *string           `json:"patched_path"`
	EnvToUnset   []string          `json:"env_to_unset"`
	UsesOperator *bool             `json:"uses_operator"`
}

// runExt runs `mirrord ext ARGS` with env and parses its stdout as both
// plugins do: every line one JSON object (IntelliJ fails on any other
// line, core/MirrordApi.kt:157-171; VS Code stalls on a blank one,
// src/api.ts:533-535), done at the FinishedTask named "mirrord preparing
// to launch" with success true, whose message is a JSON string
// (src/api.ts:549-555). ext must then exit by itself, promptly: neither
// plugin kills it (src/api.ts:452-490; core/MirrordApi.kt:859-941).
func runExt(t *testing.T, env []string, args ...string) (*extExecution, []map[string]any) {
	t.Helper()
	cmd := exec.Command(mirrordBin, append([]string{"ext"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// stdin: an open pipe nobody writes to (src/api.ts:346-348).
	stdin, _ := cmd.StdinPipe()
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var msgs []map[string]any
	var exe *extExecution
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("ext printed a line that is not a JSON object: %q", sc.Text())
		}
		msgs = append(msgs, m)
		if m["type"] == "FinishedTask" && m["name"] == "mirrord preparing to launch" && m["success"] == true {
			s, ok := m["message"].(string)
			if !ok {
				t.Fatalf("the final message is not a string: %v", m["message"])
			}
			exe = &extExecution{}
			if err := json.Unmarshal([]byte(s), exe); err != nil {
				t.Fatalf("the final message is not the execution's JSON: %v: %q", err, s)
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if exe != nil && err != nil {
			t.Fatalf("ext succeeded but exited with %v; stderr %s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("ext did not exit after it printed the execution")
	}
	if exe != nil && stderr.Len() > 0 {
		t.Errorf("ext wrote to stderr on success (VS Code shows any later \"Error: \" line): %q", stderr.String())
	}
	if exe == nil {
		t.Logf("ext stderr: %s", stderr.String())
	}
	return exe, msgs
}

// ideProgramEnv is the environment the IDE starts the program with: its
// own, the run configuration's, the execution's variables (which override
// the others, as the plugins merge maps), without env_to_unset (vscode
// src/debugger.ts:241-251).
func ideProgramEnv(exe *extExecution, runConfig ...string) []string {
	env := append(os.Environ(), runConfig...)
	for k, v := range exe.Environment {
		env = append(env, k+"="+v)
	}
	out := env[:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		unset := false
		for _, u := range exe.EnvToUnset {
			unset = unset || u == k
		}
		if !unset {
			out = append(out, kv)
		}
	}
	return out
}

// sessionProcs lists the processes of ext sessions and local agents for
// the target pid that are still running.
func sessionProcs(t *testing.T, pid int) []string {
	t.Helper()
	out, _ := exec.Command("pgrep", "-af", mirrordBin).Output()
	var procs []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(l, "serve-session") || strings.Contains(l, fmt.Sprintf("--target-pid %d ", pid)) {
			procs = append(procs, l)
		}
	}
	return procs
}

func TestIDEVSCode(t *testing.T) {
	f := newFixture(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is needed for this test (make deps installs it)")
	}
	// A Go program built as an IDE builds it: with cgo where a C
	// compiler is present, so dynamically linked.
	goDyn := filepath.Join(t.TempDir(), "goclient-cgo")
	build := exec.Command("go", "build", "-o", goDyn, "./testdata/goclient")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// dlv as `go install` builds it where a C compiler is present:
	// dynamically linked. (Built before ext: the session ends one
	// idle_timeout after its last program.)
	dbg := filepath.Join(t.TempDir(), "dlv")
	build = exec.Command("go", "build", "-o", dbg, "github.com/go-delve/delve/cmd/dlv")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build dlv: %v\n%s", err, out)
	}
	debugged := loopserver(t)
	cfg := filepath.Join(f.dir, "mirrord.json")
	os.WriteFile(cfg, []byte(`{"feature": {"network": {"incoming": "steal"}, "fs": {"mode": "read", "read_only": ["`+f.podFiles+`"]}},
		"agent": {"ttl": 1}, "internal_proxy": {"idle_timeout": 2}}`), 0o644)
	target := fmt.Sprintf("pid/%d", f.podPID)

	// verify-config --ide (vscode src/config.ts:29-80): type, warnings,
	// errors, config.path (null: no target set, so the picker shows).
	out, err := exec.Command(mirrordBin, "verify-config", "--ide", cfg).Output()
	if err != nil {
		t.Fatalf("verify-config --ide: %v", err)
	}
	var verified struct {
		Type     string   `json:"type"`
		Warnings []string `json:"warnings"`
		Config   struct {
			Path any `json:"path"`
		} `json:"config"`
	}
	if err := json.Unmarshal(out, &verified); err != nil || verified.Type != "Success" || verified.Warnings == nil || verified.Config.Path != nil {
		t.Fatalf("verify-config --ide: %+v %v\n%s", verified, err, out)
	}

	// The debug configuration's variables, which VS Code also gives ext
	// (src/debugger.ts:194-210).
	runConfig := []string{"MIRRORD_IGNORE_DEBUGGER_PORTS=45000-65535"}
	exe, msgs := runExt(t, append(append([]string{}, vscodeEnv...), runConfig...), "-t", target, "-f", cfg)
	if exe == nil {
		t.Fatalf("ext did not succeed: %v", msgs)
	}
	if !strings.Contains(exe.Environment["LD_PRELOAD"], "libmirrord") || exe.PatchedPath != nil || exe.EnvToUnset == nil || exe.UsesOperator == nil {
		t.Fatalf("execution: %+v", exe)
	}
	if exe.Environment["SECRET_TOKEN"] != secret {
		t.Errorf("the pod's environment is not in the execution: SECRET_TOKEN=%q", exe.Environment["SECRET_TOKEN"])
	}
	if len(sessionProcs(t, f.podPID)) == 0 {
		t.Fatal("no session runs after ext exited")
	}
	// A process of the program that lives through the subtests, as an
	// IDE's run does, so that the gaps between them do not end the
	// session.
	keeper := exec.Command("sleep", "600")
	keeper.Env = ideProgramEnv(exe)
	if err := keeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { keeper.Process.Kill(); keeper.Wait() }()

	want := func(t *testing.T, out string, parts ...string) {
		t.Helper()
		for _, p := range parts {
			if !strings.Contains(out, p) {
				t.Errorf("output lacks %q:\n%s", p, out)
			}
		}
	}
	t.Run("python", func(t *testing.T) {
		cmd := exec.Command("python3", "-c", `
import os, socket, urllib.request
print("env", os.environ.get("SECRET_TOKEN"))
print("hostname", socket.gethostname())
print("file", open(os.path.join(os.environ["PODFILES"], "config.yaml")).read().strip())
print("svc", urllib.request.urlopen("http://`+svcName+`:8080/", timeout=5).read().decode())`)
		cmd.Env = ideProgramEnv(exe, "PODFILES="+f.podFiles)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		want(t, string(out), "env "+secret, "hostname "+podHostname, "file pod: config", "svc "+svcBody)
	})
	t.Run("node", func(t *testing.T) {
		cmd := exec.Command(node, "-e", `
const http = require("http"), os = require("os");
console.log("env", process.env.SECRET_TOKEN, "hostname", os.hostname());
http.get("http://`+svcName+`:8080/", r => { let b = ""; r.on("data", d => b += d); r.on("end", () => console.log("svc", b)); });`)
		cmd.Env = ideProgramEnv(exe)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		want(t, string(out), "env "+secret+" hostname "+podHostname, "svc "+svcBody)
	})
	t.Run("go", func(t *testing.T) {
		// Started directly, as VS Code Go and GoLand run a built program:
		// the library sends it to the sandbox of this session.
		cmd := exec.Command(goDyn, svcName)
		cmd.Env = ideProgramEnv(exe, "MIRRORD_SKIP_PROCESSES=dlv;debugserver;compile;go;asm;cgo;link;git;gcc;as;ld;collect2;cc1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		want(t, string(out), "dns "+svcIP, "tcp "+svcBody, "udp echo:ping", "env "+secret, "hostname "+podHostname)
	})
	t.Run("go under dlv", func(t *testing.T) {
		// VS Code Go starts dlv with the launch configuration's env
		// (vscode-go src/goDebugFactory.ts getSpawnConfig: "the additional
		// environment variables users want to run the dlv and the debuggee
		// with"), dlv in the skip list. dlv is dynamically linked, so the
		// library loads and sends it, with its program, to the sandbox.
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		api := ln.Addr().String()
		ln.Close()
		out := filepath.Join(t.TempDir(), "dlv.out")
		w, _ := os.Create(out)
		defer w.Close()
		cmd := exec.Command(dbg, "exec", "--headless", "--accept-multiclient", "--api-version", "2",
			"--listen", api, "--continue", debugged, "--", "127.0.0.1:0")
		cmd.Env = ideProgramEnv(exe, "MIRRORD_SKIP_PROCESSES=dlv;debugserver;compile;go;asm;cgo;link;git;gcc;as;ld;collect2;cc1")
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		waitLine(t, out, "API server listening at:")
		_, port, _ := net.SplitHostPort(waitLine(t, out, "listening "))
		base := "http://127.0.0.1:" + port
		mustContain(t, getOnce(t, base+"/env?k=SECRET_TOKEN"), secret)
		mustContain(t, getOnce(t, base+"/get?url="+url.QueryEscape("http://"+svcName+":8080/")), svcBody)
		if v := dlvCall(t, api, "GetVersion", "{}"); v["APIVersion"] != float64(2) {
			t.Errorf("dlv GetVersion: %v", v)
		}
		// The IDE's stop: dlv kills the program and exits (a SIGKILL of
		// dlv would leave the program running, detached, as it does
		// without mirrord).
		dlvCall(t, api, "Command", `{"Name":"halt"}`)
		dlvCall(t, api, "Detach", `{"Kill":true}`)
		waitClosed(t, "the debugged program to end with dlv's session", "127.0.0.1:"+port)
	})
	t.Run("debugger port", func(t *testing.T) {
		// A node app with its inspector on a non-loopback address: the
		// app's port is stolen, the inspector's stays on this machine
		// (MIRRORD_DETECT_DEBUGGER_PORT, vscode src/debugger.ts:201-206).
		cmd := exec.Command(node, "--inspect=0.0.0.0:9339", "testdata/echoserver.js", "8897", "ide-app")
		cmd.Env = ideProgramEnv(exe, "MIRRORD_DETECT_DEBUGGER_PORT=nodeinspector")
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		f.serveHTTP(f.pod, podIP+":9339", "pod inspector port")
		waitFor(t, "the app's port stolen", func() bool {
			body, _ := f.podGet(t, "http://"+podIP+":8897/")
			return strings.HasPrefix(body, "ide-app")
		})
		for range 3 {
			if body, err := f.podGet(t, "http://"+podIP+":9339/"); err != nil || body != "pod inspector port" {
				t.Fatalf("the debugger's port was taken from the pod: %q %v\n%s", body, err, buf.String())
			}
		}
	})
	t.Run("children outlive the parent", func(t *testing.T) {
		// The shell exits at once; its background child keeps the
		// session until it ends.
		cmd := exec.Command("sh", "-c", "sleep 5 & exit 0")
		cmd.Env = ideProgramEnv(exe)
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		keeper.Process.Kill()
		keeper.Wait()
		time.Sleep(3 * time.Second) // past idle_timeout (2 s), before sleep ends
		if len(sessionProcs(t, f.podPID)) == 0 {
			t.Fatal("the session ended while a process of the program ran")
		}
	})
	// The last process has exited: the session ends idle_timeout later,
	// its agent agent.ttl after that, and the stolen port is released.
	waitFor(t, "the session and its agent gone", func() bool { return len(sessionProcs(t, f.podPID)) == 0 })
	waitFor(t, "no nftables table left", func() bool { return len(f.nftTables(t)) == 0 })
}

func TestIDEErrors(t *testing.T) {
	// A config error: stdout stays JSON lines, stderr is one line
	// "Error: " + miette's JSON, parsed as IntelliJ types it
	// (core/MirrordError.kt:13-26: message, severity, causes, help,
	// labels, related; labels/related lists of strings), exit status 1.
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"feature": {"network": {"incoming": {"mode": "sideways"}}}}`), 0o644)
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"ext intellij", intellijEnv, []string{"ext", "-t", "pod/x", "-f", bad}},
		{"ext vscode", vscodeEnv, []string{"ext", "-t", "pod/x", "-f", bad}},
		{"ls intellij", append([]string{"MIRRORD_LS_RICH_OUTPUT=true"}, intellijEnv...), []string{"ls", "-f", bad, "-o", "json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(mirrordBin, tc.args...)
			cmd.Env = append(os.Environ(), tc.env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("exit: %v", err)
			}
			for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
				if l != "" && !json.Valid([]byte(l)) {
					t.Errorf("stdout line is not JSON: %q", l)
				}
			}
			rest, ok := strings.CutPrefix(stderr.String(), "Error: ")
			if !ok || strings.Count(strings.TrimSpace(rest), "\n") != 0 {
				t.Fatalf("stderr is not one \"Error: \" line: %q", stderr.String())
			}
			var e struct {
				Message  string   `json:"message"`
				Severity string   `json:"severity"`
				Causes   []string `json:"causes"`
				Help     *string  `json:"help"`
				Labels   []string `json:"labels"`
				Related  []string `json:"related"`
			}
			if err := json.Unmarshal([]byte(rest), &e); err != nil || e.Severity != "error" || !strings.Contains(e.Message, "sideways") || e.Labels == nil || e.Related == nil {
				t.Errorf("error JSON: %+v %v: %s", e, err, rest)
			}
		})
	}
}

func TestIDEIntelliJ(t *testing.T) {
	f := newFixture(t)
	cfg := filepath.Join(f.dir, "mirrord.json")
	os.WriteFile(cfg, []byte(`{"agent": {"ttl": 1}, "internal_proxy": {"idle_timeout": 1}}`), 0o644)
	// Left over from an earlier run, in the environment ext and the
	// program inherit: another layer library in LD_PRELOAD and upstream's
	// MIRRORD_RESOLVED_CONFIG (intellij core/MirrordExecManager.kt:209-224
	// refuses to start with them; they must not reach the program).
	stale := filepath.Join(t.TempDir(), "1-libmirrord_layer.so")
	os.WriteFile(stale, []byte("not a library"), 0o644)
	leftovers := []string{"LD_PRELOAD=" + stale, "MIRRORD_RESOLVED_CONFIG=e30=", "MIRRORD_LAYER_SOCK=@gone"}
	// Argument order -t -f -e (core/MirrordApi.kt:736-806).
	exe, msgs := runExt(t, append(append([]string{}, intellijEnv...), leftovers...),
		"-t", fmt.Sprintf("pid/%d", f.podPID), "-f", cfg, "-e", "/usr/bin/python3")
	if exe == nil {
		t.Fatalf("ext did not succeed: %v", msgs)
	}
	infos := 0
	for _, m := range msgs {
		if m["type"] == "Info" {
			infos++
		}
	}
	if infos == 0 {
		t.Errorf("MIRRORD_EXT_PRINT_CONFIG=TRUE: no Info lines in %v", msgs)
	}
	if strings.Contains(exe.Environment["LD_PRELOAD"], stale) {
		t.Errorf("the stale library stays in LD_PRELOAD: %q", exe.Environment["LD_PRELOAD"])
	}
	unset := strings.Join(exe.EnvToUnset, " ")
	if !strings.Contains(unset, "MIRRORD_RESOLVED_CONFIG") {
		t.Errorf("MIRRORD_RESOLVED_CONFIG is not in env_to_unset: %v", exe.EnvToUnset)
	}
	// After ext IntelliJ adds MIRRORD_IGNORE_DEBUGGER_PORTS
	// (core/MirrordExecManager.kt:255-263) and, for PyCharm,
	// MIRRORD_DETECT_DEBUGGER_PORT=pydevd.
	cmd := exec.Command("python3", "-c", `
import os, socket, urllib.request
print("env", os.environ.get("SECRET_TOKEN"), "hostname", socket.gethostname())
print("svc", urllib.request.urlopen("http://`+svcName+`:8080/", timeout=5).read().decode())`)
	cmd.Env = ideProgramEnv(exe, append(leftovers, "MIRRORD_IGNORE_DEBUGGER_PORTS=35000-65535", "MIRRORD_DETECT_DEBUGGER_PORT=pydevd")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	mustContain(t, string(out), "env "+secret+" hostname "+podHostname, "svc "+svcBody)
	waitFor(t, "the session and its agent gone", func() bool { return len(sessionProcs(t, f.podPID)) == 0 })

	// The same environment once the session is gone (a run configuration
	// reused without the plugin): the program runs on this machine alone,
	// and says why.
	cmd = exec.Command("python3", "-c", `import socket; print("hostname", socket.gethostname())`)
	cmd.Env = ideProgramEnv(exe)
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("after the session: %v\n%s", err, out)
	}
	host, _ := os.Hostname()
	mustContain(t, string(out), "session this environment was made for has ended", "hostname "+host)
}
