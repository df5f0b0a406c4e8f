package integration

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestAgentImageArm64 builds the linux/arm64 mirrord as make does (with
// its own preload library, from the cross compiler), has the amd64 one
// push the agent image of both to a registry on loopback, and checks what
// each node pulls: the platform, the entrypoint, and the layer's /mirrord,
// which is that architecture's static build, embeds that architecture's
// preload library, and runs (the arm64 one under qemu-user).
func TestAgentImageArm64(t *testing.T) {
	if out, err := exec.Command("make", "-s", "-C", "..", "preload/lib/arm64/libmirrord_layer.so").CombinedOutput(); err != nil {
		t.Fatalf("building the arm64 preload library (make deps installs the cross compiler): %v\n%s", err, out)
	}
	armBin := filepath.Join(t.TempDir(), "mirrord-linux-arm64")
	build := exec.Command("go", "build", "-o", armBin, "../cmd/mirrord")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build GOARCH=arm64: %v\n%s", err, out)
	}
	libs := map[string][]byte{}
	for _, arch := range []string{"amd64", "arm64"} {
		b, err := os.ReadFile("../preload/lib/" + arch + "/libmirrord_layer.so")
		if err != nil {
			t.Fatal(err)
		}
		libs[arch] = b
	}

	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/mirrord:multi"
	push := exec.Command(mirrordBin, "agent-image", "push", "--insecure", "--binary", armBin, ref)
	push.Env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir())
	var stdout, stderr bytes.Buffer
	push.Stdout, push.Stderr = &stdout, &stderr
	if err := push.Run(); err != nil {
		t.Fatalf("agent-image push: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "linux/amd64, linux/arm64") {
		t.Errorf("push does not name both platforms: %q", stderr.String())
	}
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}

	for arch, want := range map[string]string{"amd64": mirrordBin, "arm64": armBin} {
		img, err := remote.Image(tag, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: arch}))
		if err != nil {
			t.Fatalf("pull for linux/%s: %v", arch, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != "linux" || cf.Architecture != arch || !slices.Equal(cf.Config.Entrypoint, []string{"/mirrord"}) || !slices.Equal(cf.Config.Cmd, []string{"agent"}) {
			t.Errorf("linux/%s: config %s/%s, entrypoint %q, cmd %q", arch, cf.OS, cf.Architecture, cf.Config.Entrypoint, cf.Config.Cmd)
		}
		bin := layerFile(t, img, "mirrord")
		if built, _ := os.ReadFile(want); !bytes.Equal(bin, built) {
			t.Errorf("linux/%s: /mirrord is not %s", arch, want)
		}
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("linux/%s: /mirrord: %v", arch, err)
		}
		machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
		if f.Machine != machine || f.Class != elf.ELFCLASS64 || f.Type != elf.ET_EXEC {
			t.Errorf("linux/%s: /mirrord is %v %v %v", arch, f.Machine, f.Class, f.Type)
		}
		if slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP }) {
			t.Errorf("linux/%s: /mirrord is dynamically linked", arch)
		}
		for libArch, lib := range libs {
			if has := bytes.Contains(bin, lib); has != (libArch == arch) {
				t.Errorf("linux/%s: embeds the %s preload library: %v", arch, libArch, has)
			}
		}
	}

	// The arm64 agent runs: qemu-user starts it (no binfmt_misc needed).
	out, err := exec.Command("qemu-aarch64", armBin, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "mirrord ") {
		t.Errorf("qemu-aarch64 mirrord --version: %v: %q (make deps installs qemu-user)", err, out)
	}
}

// layerFile is the content of the file at path in the image's layers.
func layerFile(t *testing.T, img v1.Image, path string) []byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Name == path {
				if h.Mode&0o777 != 0o755 {
					t.Errorf("/%s: mode %o, want 755", path, h.Mode)
				}
				b, err := io.ReadAll(tr)
				rc.Close()
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}
		rc.Close()
	}
	t.Fatalf("no %s in the image's layers", path)
	return nil
}
