package cli

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mirrord-go/mirrord/config"
)

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &Env{Stdout: &out, Stderr: &errb, Lookup: func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}})
	return result{code, out.String(), errb.String()}
}

func TestVersion(t *testing.T) {
	r := runCLI(t, nil, "--version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "mirrord ") {
		t.Errorf("--version = %d %q", r.code, r.stdout)
	}
}

func TestVerifyConfig(t *testing.T) {
	r := runCLI(t, nil, "verify-config", "../config/testdata/spec/L2263-2341.json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var resolved map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &resolved); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, r.stdout)
	}
	if got := resolved["target"].(map[string]any)["path"]; got != "pod/bear-pod" {
		t.Errorf("target.path = %v", got)
	}
	if !strings.Contains(r.stderr, "warning: operator") {
		t.Errorf("expected an operator warning on stderr, got %q", r.stderr)
	}

	r = runCLI(t, nil, "verify-config", "../config/testdata/invalid/outgoing_protocol.json")
	if r.code != 1 || !strings.Contains(r.stderr, "feature.network.outgoing.filter.remote[1]") {
		t.Errorf("invalid config: exit %d, stderr %q", r.code, r.stderr)
	}

	r = runCLI(t, nil, "verify-config", "--ide", "../config/testdata/invalid/outgoing_protocol.json")
	var ide struct {
		Type   string   `json:"type"`
		Errors []string `json:"errors"`
	}
	// --ide always exits 0, as upstream's (cli/src/verify_config.rs): the
	// plugins read the document, not the status.
	if err := json.Unmarshal([]byte(r.stdout), &ide); err != nil || r.code != 0 || ide.Type != "Fail" || len(ide.Errors) != 1 {
		t.Errorf("--ide on an invalid config: exit %d, %+v, %v", r.code, ide, err)
	}
	r = runCLI(t, nil, "verify-config", "--ide", "../config/testdata/spec/L165-167.json")
	if err := json.Unmarshal([]byte(r.stdout), &ide); err != nil || r.code != 0 || ide.Type != "Success" {
		t.Errorf("--ide on a valid config: exit %d, %+v, %v", r.code, ide, err)
	}
	r = runCLI(t, nil, "verify-config", "missing.json")
	if r.code != 1 || !strings.Contains(r.stderr, "missing.json") {
		t.Errorf("missing file: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestConfigSchema(t *testing.T) {
	r := runCLI(t, nil, "config", "schema")
	var s map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &s) != nil || s["$schema"] == nil {
		t.Errorf("config schema: exit %d, %.200s", r.code, r.stdout)
	}
}

// TestContainerBadCommand: a command that is not a runtime's run, or a run
// mirrord cannot read, is refused before anything starts (no cluster is
// configured here: reaching one would fail differently).
func TestContainerBadCommand(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"container"}, "no command given"},
		{[]string{"container", "--", "ls", "-l"}, "must be a container runtime's run"},
		{[]string{"container", "--", "docker", "ps"}, "must be a container runtime's run"},
		{[]string{"container", "-f", "/no/such/config.json", "--", "docker", "run", "x"}, "config"},
	} {
		r := runCLI(t, nil, tt.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("%q: exit %d, stderr %q; want %q", tt.args, r.code, r.stderr, tt.want)
		}
	}
}

func TestUnknownFlag(t *testing.T) {
	r := runCLI(t, nil, "exec", "--targit", "pod/x", "--", "ls")
	if r.code != 2 || !strings.Contains(r.stderr, "--targit") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestFlagPrecedence parses real command lines and checks that flags win
// over MIRRORD_* variables, which win over the config file.
func TestFlagPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "m.toml")
	os.WriteFile(file, []byte("target = \"pod/file\"\n[feature.fs]\nmode = \"write\"\n[agent]\nttl = 3\nnamespace = \"file-ns\"\n"), 0o600)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		get  func(*config.Config) any
		want any
	}{
		{"file target", []string{"-f", file}, nil, func(c *config.Config) any { return c.Target.Path.String() }, "pod/file"},
		{"env target", []string{"-f", file}, map[string]string{"MIRRORD_IMPERSONATED_TARGET": "deploy/env"},
			func(c *config.Config) any { return c.Target.Path.String() }, "deployment/env"},
		{"flag target", []string{"-f", file, "-t", "pod/flag"}, map[string]string{"MIRRORD_IMPERSONATED_TARGET": "deploy/env"},
			func(c *config.Config) any { return c.Target.Path.String() }, "pod/flag"},
		{"config file from env", nil, map[string]string{"MIRRORD_CONFIG_FILE": file},
			func(c *config.Config) any { return c.Agent.TTL }, uint16(3)},
		{"--agent-ttl", []string{"-f", file, "--agent-ttl", "9"}, map[string]string{"MIRRORD_AGENT_TTL": "7"},
			func(c *config.Config) any { return c.Agent.TTL }, uint16(9)},
		{"-a", []string{"-f", file, "-a", "flag-ns"}, nil, func(c *config.Config) any { return *c.Agent.Namespace }, "flag-ns"},
		{"--fs-mode", []string{"-f", file, "--fs-mode", "local"}, nil, func(c *config.Config) any { return c.Feature.FS.Mode }, config.FsLocal},
		{"--steal", []string{"-t", "pod/x", "--steal"}, nil, func(c *config.Config) any { return c.Feature.Network.Incoming.Mode }, config.IncomingSteal},
		{"--tcp-steal alias", []string{"-t", "pod/x", "--tcp-steal"}, nil, func(c *config.Config) any { return c.Feature.Network.Incoming.Mode }, config.IncomingSteal},
		{"--no-outgoing", []string{"--no-outgoing"}, map[string]string{"MIRRORD_TCP_OUTGOING": "true"}, func(c *config.Config) any {
			return [2]bool{c.Feature.Network.Outgoing.TCP, c.Feature.Network.Outgoing.UDP}
		}, [2]bool{false, false}},
		{"--no-udp-outgoing", []string{"--no-udp-outgoing"}, nil, func(c *config.Config) any {
			return [2]bool{c.Feature.Network.Outgoing.TCP, c.Feature.Network.Outgoing.UDP}
		}, [2]bool{true, false}},
		{"-x and -s", []string{"-x", "A;B", "-s", "C"}, nil, func(c *config.Config) any {
			return [][]string{c.Feature.Env.Exclude, c.Feature.Env.Include}
		}, [][]string{{"A", "B"}, {"C"}}},
		{"--context", []string{"--context", "kind-x"}, map[string]string{"MIRRORD_KUBE_CONTEXT": "env-ctx"}, func(c *config.Config) any { return *c.KubeContext }, "kind-x"},
		{"-c", []string{"-c"}, nil, func(c *config.Config) any { return *c.AcceptInvalidCertificates }, true},
		{"--no-remote-dns", []string{"--no-remote-dns"}, nil, func(c *config.Config) any { return c.Feature.Network.DNS.Enabled }, false},
		{"-e", []string{"-t", "pod/x", "-e"}, nil, func(c *config.Config) any { return c.Agent.Ephemeral }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var root CLI
			env := &Env{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Lookup: func(k string) (string, bool) {
				v, ok := tt.env[k]
				return v, ok
			}}
			parser, err := newParser(&root, env, func(int) { t.Fatal("exit") })
			if err != nil {
				t.Fatal(err)
			}
			args := append(append([]string{"exec"}, tt.args...), "--", "true")
			if _, err := parser.Parse(args); err != nil {
				t.Fatal(err)
			}
			cfg, err := loadConfig(env, newProgress(env), &root.Exec.ConfigFlags, root.Exec.settings())
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(cfg); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// TestExecWithoutCluster: a cluster that never answers is reported within
// 10 seconds, with the kubeconfig and context that were tried.
func TestExecWithoutCluster(t *testing.T) {
	// An API server address that accepts connections and then says
	// nothing: the worst case, where only the timeout helps.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://`+ln.Addr().String()+`"}}]
contexts: [{name: silent, context: {cluster: c, user: u}}]
current-context: silent
users: [{name: u, user: {token: t}}]
`), 0o600)

	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		wants []string
	}{
		{"silent server", map[string]string{"KUBECONFIG": kubeconfig}, []string{"--kubeconfig", kubeconfig},
			[]string{kubeconfig, `context "silent"`, ln.Addr().String(), "no answer within"}},
		{"missing kubeconfig", nil, []string{"--kubeconfig", kubeconfig + ".missing"},
			[]string{kubeconfig + ".missing"}},
		{"unknown context", nil, []string{"--kubeconfig", kubeconfig, "--context", "prod"},
			[]string{`context "prod" not found`, kubeconfig, "silent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			args := append(append([]string{"exec"}, tt.args...), "--", "true")
			r := runCLI(t, tt.env, args...)
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v, want under 10s", d)
			}
			if r.code != 1 {
				t.Errorf("exit %d, want 1", r.code)
			}
			for _, w := range tt.wants {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, r.stderr)
				}
			}
			if strings.Contains(r.stderr, "goroutine") || strings.Contains(r.stderr, "panic") {
				t.Errorf("stderr has a stack trace:\n%s", r.stderr)
			}
		})
	}
}

// TestVerifyConfigSpecCorpus runs `mirrord verify-config` on every complete
// config example of the documentation.
func TestVerifyConfigSpecCorpus(t *testing.T) {
	files, _ := filepath.Glob("../config/testdata/spec/*")
	if len(files) < 40 {
		t.Fatalf("spec corpus has %d files", len(files))
	}
	for _, f := range files {
		if r := runCLI(t, nil, "verify-config", f); r.code != 0 {
			t.Errorf("verify-config %s: exit %d\n%s", filepath.Base(f), r.code, r.stderr)
		}
	}
}

func TestProgramPathMeansExec(t *testing.T) {
	var root CLI
	env := &Env{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}}
	parser, err := newParser(&root, env, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(t.TempDir(), "pkg.test")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	tests := []struct {
		args []string
		want bool
	}{
		{[]string{exe, "-test.v"}, true},
		{[]string{"./pkg.test"}, true},
		{[]string{"exec", "--", "x"}, false},
		{[]string{"ls"}, false}, // a subcommand, even if a file "ls" existed
		{[]string{"--version"}, false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := isProgramPath(tt.args, parser); got != tt.want {
			t.Errorf("isProgramPath(%q) = %v, want %v", tt.args, got, tt.want)
		}
	}
}

func TestFindProjectConfig(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, ".mirrord"), 0o755)
	os.WriteFile(filepath.Join(root, ".mirrord", "mirrord.toml"), []byte(""), 0o644)
	deep := filepath.Join(root, "a", "b")
	os.MkdirAll(deep, 0o755)
	wd, _ := os.Getwd()
	defer os.Chdir(wd)
	os.Chdir(deep)
	if got := findProjectConfig(); got != filepath.Join(root, ".mirrord", "mirrord.toml") {
		t.Errorf("findProjectConfig() = %q", got)
	}
}

func TestParseForward(t *testing.T) {
	tests := []struct {
		in   string
		want forward
		err  bool
	}{
		{in: "8080:py-serv:80", want: forward{localPort: 8080, remoteHost: "py-serv", remotePort: 80}},
		{in: "py-serv:80", want: forward{localPort: 80, remoteHost: "py-serv", remotePort: 80}},
		{in: "udp/5353:kube-dns.kube-system:53", want: forward{udp: true, localPort: 5353, remoteHost: "kube-dns.kube-system", remotePort: 53}},
		{in: "9000:[fd00::1]:80", want: forward{localPort: 9000, remoteHost: "fd00::1", remotePort: 80}},
		{in: "[fd00::1]:80", want: forward{localPort: 80, remoteHost: "fd00::1", remotePort: 80}},
		{in: "10.0.0.1:5432", want: forward{localPort: 5432, remoteHost: "10.0.0.1", remotePort: 5432}},
		{in: "8080", err: true},
		{in: "8080:host:http", err: true},
		{in: "x:host:80", err: true},
		{in: ":80", err: true},
	}
	for _, tt := range tests {
		got, err := parseForward(tt.in)
		if tt.err {
			if err == nil {
				t.Errorf("parseForward(%q) = %+v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseForward(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseReverse(t *testing.T) {
	for in, want := range map[string]reverse{"80:8080": {80, 8080}, "8080": {8080, 8080}} {
		if got, err := parseReverse(in); err != nil || got != want {
			t.Errorf("parseReverse(%q) = %+v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "x", "80:", "0:80", "80:70000"} {
		if _, err := parseReverse(in); err == nil {
			t.Errorf("parseReverse(%q) should fail", in)
		}
	}
}

// TestContainerExtReady: the lines that tell container-ext's front that
// the session is ready, in JSON progress mode and without.
func TestContainerExtReady(t *testing.T) {
	for line, want := range map[string]bool{
		`{"type":"FinishedTask","name":"mirrord preparing to launch","success":true,"message":"{}"}`: true,
		`{"type":"FinishedTask","name":"mirrord preparing to launch","success":false,"message":"x"}`: false,
		`{"type":"FinishedTask","name":"sidecar","success":true,"message":"x"}`:                      false,
		`{"runtime":"docker","extra_args":["--network","container:x"],"uses_operator":false}`:        true,
		`{"runtime":"docker"}`: false,
		`* agent: ready`:       false,
	} {
		if got := containerExtReady([]byte(line)); got != want {
			t.Errorf("containerExtReady(%s) = %v, want %v", line, got, want)
		}
	}
}
