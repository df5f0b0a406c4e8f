package container

import (
	"archive/tar"
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
)

// TestExtArgs: the options container-ext returns are docker run options
// (by docker's own help text) that leave the IDE's image and command
// where they were, and name the sidecar, the library and the env file.
func TestExtArgs(t *testing.T) {
	args := ExtArgs("0123abcd", "/home/u/.cache/mirrord/libmirrord_layer-1.so", "/opt/mirrord/lib/libmirrord_layer.so", "/tmp/mirrord-container-ext-1/env")
	want := []string{"--network", "container:0123abcd", "--volume", "/home/u/.cache/mirrord/libmirrord_layer-1.so:/opt/mirrord/lib/libmirrord_layer.so:ro", "--env-file", "/tmp/mirrord-container-ext-1/env"}
	if !slices.Equal(args, want) {
		t.Errorf("ExtArgs = %q, want %q", args, want)
	}
	for _, file := range []string{"docker-28.2-run-help.txt", "docker-20.10-run-help.txt"} {
		f := loadFlags(t, file)
		// As IntelliJ adds them: before the user's own options.
		argv := append(append([]string{"docker", "run"}, args...), "--rm", "-e", "A=b", "python:3", "-c", "print(1)")
		ra, err := ParseRun(argv, f)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if ra.Image != "python:3" || !slices.Equal(ra.Command, []string{"-c", "print(1)"}) || ra.Entrypoint != nil {
			t.Errorf("%s: image %q command %q entrypoint %v", file, ra.Image, ra.Command, ra.Entrypoint)
		}
		// No element has a space: IntelliJ joins them with spaces.
		for _, a := range args {
			if strings.ContainsAny(a, " \t") {
				t.Errorf("argument %q has a space", a)
			}
		}
	}
}

func TestSidecarArgs(t *testing.T) {
	args := sidecarArgs("/tmp/d", "mirrord-go-sidecar:abc", []string{"--network", "host"}, "/opt/mirrord/lib/l.so", "pod/x/container/y", []uint16{80, 8080}, "debug")
	f := loadFlags(t, "docker-28.2-run-help.txt")
	ra, err := ParseRun(append([]string{"docker"}, args...), f)
	if err != nil {
		t.Fatal(err)
	}
	if !ra.Detach || ra.Image != "mirrord-go-sidecar:abc" {
		t.Errorf("detach %v image %q", ra.Detach, ra.Image)
	}
	if !slices.Contains(ra.Options, "--rm") || !slices.Contains(ra.Options, "/tmp/d:"+RunDir) || !slices.Contains(ra.Options, "host") {
		t.Errorf("options %q lack --rm, the run directory or cli_extra_args", ra.Options)
	}
	if ra.Entrypoint == nil || *ra.Entrypoint != BinPath {
		t.Errorf("entrypoint %v, want %s", ra.Entrypoint, BinPath)
	}
	want := []string{SidecarCommand, "--agent-addr", "unix:" + AgentSock, "--layer-lib", "/opt/mirrord/lib/l.so",
		"--via", "pod/x/container/y", "--probe-ports", "80,8080", "--log-level", "debug"}
	if !slices.Equal(ra.Command, want) {
		t.Errorf("command %q, want %q", ra.Command, want)
	}
	args = sidecarArgs("/tmp/d", "i", nil, "/l.so", "targetless", nil, "")
	if slices.Contains(args, "--probe-ports") || slices.Contains(args, "--log-level") {
		t.Errorf("empty probe ports and log level passed: %q", args)
	}
}

func TestProgramEnv(t *testing.T) {
	env := programEnv(&SidecarReady{
		Env:   map[string]string{"APP": "hello world", "MIRRORD_LAYER_SOCK": "from the target", "LD_PRELOAD": "/target/lib.so"},
		Layer: map[string]string{"MIRRORD_LAYER_SOCK": "@mirrord-layer-1", "MIRRORD_LAYER_EXE": "/opt/mirrord/bin/mirrord", "MIRRORD_LAYER_HOLD": "1"},
	}, "/opt/mirrord/lib/libmirrord_layer.so")
	want := map[string]string{"APP": "hello world", "MIRRORD_LAYER_SOCK": "@mirrord-layer-1", "MIRRORD_LAYER_HOLD": "1",
		"LD_PRELOAD": "/opt/mirrord/lib/libmirrord_layer.so"}
	if len(env) != len(want) {
		t.Errorf("programEnv = %v, want %v", env, want)
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
}

func TestEnvFileContent(t *testing.T) {
	got, skipped := envFileContent(map[string]string{
		"B": "two words", "A": "x=y", "EMPTY": "", "MULTI": "line1\nline2", "BAD NAME": "v", "C": " lead#not-a-comment",
	})
	want := "A=x=y\nB=two words\nC= lead#not-a-comment\nEMPTY=\n"
	if got != want {
		t.Errorf("content:\n%q\nwant\n%q", got, want)
	}
	if !slices.Equal(skipped, []string{"BAD NAME", "MULTI"}) {
		t.Errorf("skipped %q", skipped)
	}
}

// TestSidecarTar: the image's file system holds the binary, executable,
// at BinPath, its directories, and a /tmp anyone may write.
func TestSidecarTar(t *testing.T) {
	bin := bytes.Repeat([]byte("\x7fELF"), 1000)
	var buf bytes.Buffer
	if err := writeSidecarTar(&buf, bytes.NewReader(bin), int64(len(bin))); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	seen := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seen[h.Name] = h
		if h.Name == strings.TrimPrefix(BinPath, "/") {
			data, _ := io.ReadAll(tr)
			if !bytes.Equal(data, bin) || h.Mode != 0o755 {
				t.Errorf("binary: %d bytes, mode %o", len(data), h.Mode)
			}
		}
	}
	for _, name := range []string{"opt/mirrord/bin/mirrord", "opt/mirrord/bin/", "opt/mirrord/run/", "tmp/"} {
		if seen[name] == nil {
			t.Errorf("no %s in the image", name)
		}
	}
	if h := seen["tmp/"]; h != nil && h.Mode != 0o1777 {
		t.Errorf("/tmp mode %o", h.Mode)
	}
}
