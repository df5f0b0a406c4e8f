package cli

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/version"
)

// fakeBinary writes the header of a static ELF64 executable for the
// machine, followed by some bytes.
func fakeBinary(t *testing.T, m elf.Machine) string {
	t.Helper()
	hdr := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(m), Version: 1, Entry: 0x401000, Ehsize: 64, Phentsize: 56, Shentsize: 64}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, hdr)
	b.WriteString("not really mirrord")
	p := filepath.Join(t.TempDir(), "mirrord-"+m.String())
	if err := os.WriteFile(p, b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// agentImageSetup makes the running binary a fake amd64 mirrord, keeps the
// user's docker config out of the test, and starts a registry on loopback.
func agentImageSetup(t *testing.T) (host, self string) {
	t.Helper()
	self = fakeBinary(t, elf.EM_X86_64)
	old := executable
	executable = func() (string, error) { return self, nil }
	t.Cleanup(func() { executable = old })
	dir := t.TempDir()
	for _, k := range []string{"HOME", "DOCKER_CONFIG", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR"} {
		t.Setenv(k, dir)
	}
	t.Setenv("REGISTRY_AUTH_FILE", filepath.Join(dir, "none.json"))
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), self
}

var digestLine = regexp.MustCompile(`^(\S+)@(sha256:[0-9a-f]{64})\n$`)

func TestAgentImagePush(t *testing.T) {
	host, _ := agentImageSetup(t)
	r := runCLI(t, nil, "agent-image", "push", host+"/mirrord")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	m := digestLine.FindStringSubmatch(r.stdout)
	if m == nil || m[1] != host+"/mirrord:"+version.Version {
		t.Fatalf("stdout %q, want %s/mirrord:%s@sha256:...", r.stdout, host, version.Version)
	}
	if !strings.Contains(r.stderr, "--agent-image "+strings.TrimSpace(r.stdout)) || !strings.Contains(r.stderr, "agent.image") {
		t.Errorf("stderr does not say how to use the image: %q", r.stderr)
	}
	pushed, err := name.NewDigest(strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(pushed)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil || cf.Architecture != "amd64" || cf.Config.Entrypoint[0] != "/mirrord" {
		t.Errorf("pushed config %+v, %v", cf, err)
	}
}

func TestAgentImagePushMultiArch(t *testing.T) {
	host, _ := agentImageSetup(t)
	arm := fakeBinary(t, elf.EM_AARCH64)
	r := runCLI(t, nil, "agent-image", "push", "--insecure", "--binary", arm, host+"/a/mirrord:multi")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "linux/amd64, linux/arm64") {
		t.Errorf("stderr does not name the platforms: %q", r.stderr)
	}
	pushed, err := name.NewDigest(strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(pushed)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range im.Manifests {
		got = append(got, d.Platform.OS+"/"+d.Platform.Architecture)
	}
	if strings.Join(got, " ") != "linux/amd64 linux/arm64" {
		t.Errorf("index platforms %v", got)
	}
}

func TestAgentImageTar(t *testing.T) {
	_, self := agentImageSetup(t)
	out := filepath.Join(t.TempDir(), "agent.tar")
	r := runCLI(t, nil, "agent-image", "push", "--tar", out, "registry.example.com/mirrord:dev")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if r.stdout != "registry.example.com/mirrord:dev\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "ctr -n k8s.io images import "+out) {
		t.Errorf("stderr does not say how to load the tar: %q", r.stderr)
	}
	tag := name.MustParseReference("registry.example.com/mirrord:dev").(name.Tag)
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	if len(layers) != 1 {
		t.Fatalf("%d layers", len(layers))
	}
	if st, _ := os.Stat(self); st == nil {
		t.Fatal("binary gone")
	}
}

func TestAgentImageErrors(t *testing.T) {
	host, _ := agentImageSetup(t)
	script := filepath.Join(t.TempDir(), "mirrord.sh")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	arm := fakeBinary(t, elf.EM_AARCH64)
	amd := fakeBinary(t, elf.EM_X86_64)
	missing := filepath.Join(t.TempDir(), "missing")
	gone := httptest.NewServer(http.NotFoundHandler())
	goneHost := strings.TrimPrefix(gone.URL, "http://")
	gone.Close()

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"bad reference", []string{"Not A Reference!"}, []string{`reference "Not A Reference!"`}},
		{"digest reference", []string{host + "/m@sha256:" + strings.Repeat("0", 64)}, []string{"reference", "digest"}},
		{"missing binary", []string{"--binary", missing, host + "/m"}, []string{"--binary " + missing, "no such file"}},
		{"not ELF", []string{"--binary", script, host + "/m"}, []string{"--binary " + script, "not an ELF executable"}},
		{"same platform", []string{"--binary", amd, host + "/m"}, []string{"--binary " + amd, "linux/amd64"}},
		{"tar with binaries", []string{"--tar", filepath.Join(t.TempDir(), "x.tar"), "--binary", arm, host + "/m"}, []string{"--tar", "one platform"}},
		{"unreachable registry", []string{goneHost + "/m"}, []string{goneHost + "/m", "cannot reach the registry " + goneHost}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, nil, append([]string{"agent-image", "push"}, tc.args...)...)
			if r.code != 1 || r.stdout != "" {
				t.Errorf("exit %d, stdout %q; want 1 and nothing", r.code, r.stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr %q does not contain %q", r.stderr, w)
				}
			}
			if n := strings.Count(r.stderr, "mirrord: agent-image push:"); n != 1 || strings.Count(r.stderr, "\n") > 2 {
				t.Errorf("want one error line on stderr (after the progress line): %q", r.stderr)
			}
		})
	}

	t.Run("no kind", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		r := runCLI(t, nil, "agent-image", "push", "--kind", "dev", host+"/m")
		if r.code != 1 || !strings.Contains(r.stderr, "--kind dev") || !strings.Contains(r.stderr, "kind command is not installed") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("running binary not ELF", func(t *testing.T) {
		executable = func() (string, error) { return script, nil }
		r := runCLI(t, nil, "agent-image", "push", host+"/m")
		if r.code != 1 || !strings.Contains(r.stderr, "the running mirrord ("+script+")") || !strings.Contains(r.stderr, "--binary") {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
		r = runCLI(t, nil, "agent-image", "push", "--tar", filepath.Join(t.TempDir(), "x.tar"), "--binary", arm, "--binary", amd, host+"/m")
		if r.code != 1 || !strings.Contains(r.stderr, "one platform") {
			t.Errorf("--tar with two --binary: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

// TestAgentImagePushNotLinux: a mirrord that is no Linux build (macOS)
// pushes the image of the --binary builds alone.
func TestAgentImagePushNotLinux(t *testing.T) {
	host, _ := agentImageSetup(t)
	macho := filepath.Join(t.TempDir(), "mirrord-darwin")
	os.WriteFile(macho, []byte("\xcf\xfa\xed\xfe not really a Mach-O file"), 0o755)
	executable = func() (string, error) { return macho, nil }
	arm := fakeBinary(t, elf.EM_AARCH64)
	amd := fakeBinary(t, elf.EM_X86_64)
	r := runCLI(t, nil, "agent-image", "push", "--binary", amd, "--binary", arm, host+"/m:multi")
	if r.code != 0 || !strings.Contains(r.stderr, "(linux/amd64, linux/arm64)") {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	pushed, err := name.NewDigest(strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(pushed)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 2 {
		t.Fatalf("index %+v, %v", im, err)
	}

	out := filepath.Join(t.TempDir(), "agent.tar")
	r = runCLI(t, nil, "agent-image", "push", "--tar", out, "--binary", arm, host+"/m:arm")
	if r.code != 0 || !strings.Contains(r.stderr, "linux/arm64") {
		t.Fatalf("--tar: exit %d: %s", r.code, r.stderr)
	}
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cf, err := img.ConfigFile(); err != nil || cf.Architecture != "arm64" {
		t.Errorf("tar image config %+v, %v", cf, err)
	}
}

func TestAgentImageKind(t *testing.T) {
	agentImageSetup(t)
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args")
	// A stand-in kind that records its arguments and checks the archive
	// exists while it runs.
	os.WriteFile(filepath.Join(dir, "kind"), []byte("#!/bin/sh\necho \"$@\" > "+argsFile+"\ntest -s \"$3\"\n"), 0o755)
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	r := runCLI(t, nil, "agent-image", "push", "--kind", "dev", "registry.example.com/mirrord:k")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	b, _ := os.ReadFile(argsFile)
	if !regexp.MustCompile(`^load image-archive /\S+/agent\.tar --name dev\n$`).Match(b) {
		t.Errorf("kind called with %q", b)
	}
	if r.stdout != "registry.example.com/mirrord:k\n" || !strings.Contains(r.stderr, "--agent-image registry.example.com/mirrord:k") {
		t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

func TestAgentImageDefaultNoHint(t *testing.T) {
	var out, errb bytes.Buffer
	ref, err := name.NewTag(config.DefaultAgentImage())
	if err != nil {
		t.Fatal(err)
	}
	useHint(&Env{Stdout: &out, Stderr: &errb}, ref, ref.Name()+"@sha256:x")
	if errb.Len() != 0 {
		t.Errorf("hint for the default image: %q", errb.String())
	}
	other, _ := name.NewTag("registry.example.com/mirrord")
	useHint(&Env{Stdout: &out, Stderr: &errb}, other, "registry.example.com/mirrord:latest")
	if !strings.Contains(errb.String(), "--agent-image registry.example.com/mirrord:latest") {
		t.Errorf("hint %q", errb.String())
	}
}
