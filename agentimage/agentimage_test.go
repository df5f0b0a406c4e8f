package agentimage

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fakeELF writes a minimal ELF64 little-endian executable header for the
// machine (with a PT_INTERP program header when interp is set) followed by
// some bytes, and returns its path.
func fakeELF(t *testing.T, m elf.Machine, interp string) string {
	t.Helper()
	var b bytes.Buffer
	hdr := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(m), Version: 1, Entry: 0x401000,
		Ehsize: 64, Phentsize: 56, Shentsize: 64,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	if interp != "" {
		hdr.Phoff, hdr.Phnum = 64, 1
	}
	binary.Write(&b, binary.LittleEndian, hdr)
	if interp != "" {
		data := append([]byte(interp), 0)
		binary.Write(&b, binary.LittleEndian, elf.Prog64{
			Type: uint32(elf.PT_INTERP), Flags: uint32(elf.PF_R), Off: 64 + 56,
			Filesz: uint64(len(data)), Memsz: uint64(len(data)), Align: 1,
		})
		b.Write(data)
	}
	fmt.Fprintf(&b, "payload of a fake %v binary", m)
	p := filepath.Join(t.TempDir(), "mirrord-"+m.String())
	if err := os.WriteFile(p, b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// testRegistry is an in-process registry on loopback. With user set, it
// wants HTTP basic auth with user:pass.
func testRegistry(t *testing.T, user, pass string) string {
	t.Helper()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if user != "" {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			inner.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// hermeticDockerConfig points the default keychain at an empty directory
// (or one with credentials for host), never at the user's.
func hermeticDockerConfig(t *testing.T, host, user, pass string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("DOCKER_CONFIG", dir)
	t.Setenv("REGISTRY_AUTH_FILE", filepath.Join(dir, "none.json"))
	t.Setenv("XDG_RUNTIME_DIR", dir)
	t.Setenv("XDG_CONFIG_HOME", dir)
	if host != "" {
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		cfg := fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, host, auth)
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func mustRead(t *testing.T, path string) Binary {
	t.Helper()
	b, err := ReadBinary(path)
	if err != nil {
		t.Fatalf("ReadBinary(%s): %v", path, err)
	}
	return b
}

// checkImage checks an image the way the kubelet will use it.
func checkImage(t *testing.T, img v1.Image, binPath, arch string) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != arch {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, arch)
	}
	if got := cf.Config.Entrypoint; len(got) != 1 || got[0] != "/mirrord" {
		t.Errorf("entrypoint %q, want [/mirrord]", got)
	}
	if !cf.Created.Equal(epoch) {
		t.Errorf("created %v, want the epoch", cf.Created)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v; want one", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(rc)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != "mirrord" {
			continue
		}
		found = true
		if h.Typeflag != tar.TypeReg || h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(epoch) {
			t.Errorf("/mirrord: type %c mode %o uid %d gid %d mtime %v", h.Typeflag, h.Mode, h.Uid, h.Gid, h.ModTime)
		}
		got, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("/mirrord: %d bytes differ from the binary's %d", len(got), len(want))
		}
		f, err := elf.NewFile(bytes.NewReader(got))
		if err != nil {
			t.Fatalf("/mirrord in the image is not ELF: %v", err)
		}
		if a, _, _ := goArch(f.Class, f.Data, f.Machine); a != arch {
			t.Errorf("/mirrord in the image is %s (%v), want %s", a, f.Machine, arch)
		}
	}
	if !found {
		t.Error("no /mirrord in the layer")
	}
}

func TestReadBinary(t *testing.T) {
	for _, tc := range []struct {
		m    elf.Machine
		arch string
	}{{elf.EM_X86_64, "amd64"}, {elf.EM_AARCH64, "arm64"}, {elf.EM_RISCV, "riscv64"}, {elf.EM_S390, "s390x"}} {
		b := mustRead(t, fakeELF(t, tc.m, ""))
		if b.Platform.OS != "linux" || b.Platform.Architecture != tc.arch {
			t.Errorf("%v: platform %+v, want linux/%s", tc.m, b.Platform, tc.arch)
		}
	}

	_, err := ReadBinary(fakeELF(t, elf.EM_X86_64, "/lib64/ld-linux-x86-64.so.2"))
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") || !strings.Contains(err.Error(), "ld-linux") || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("dynamic binary: %v", err)
	}
	_, err = ReadBinary(fakeELF(t, elf.EM_SPARCV9, ""))
	if err == nil || !strings.Contains(err.Error(), "EM_SPARCV9") {
		t.Errorf("unknown machine: %v", err)
	}
	script := filepath.Join(t.TempDir(), "script")
	os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755)
	if _, err := ReadBinary(script); err == nil || !strings.Contains(err.Error(), "not an ELF executable") {
		t.Errorf("shell script: %v", err)
	}
	if _, err := ReadBinary(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestGoArch(t *testing.T) {
	for _, tc := range []struct {
		class         elf.Class
		data          elf.Data
		m             elf.Machine
		arch, variant string
	}{
		{elf.ELFCLASS32, elf.ELFDATA2LSB, elf.EM_386, "386", ""},
		{elf.ELFCLASS32, elf.ELFDATA2LSB, elf.EM_ARM, "arm", "v7"},
		{elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_PPC64, "ppc64le", ""},
		{elf.ELFCLASS64, elf.ELFDATA2MSB, elf.EM_PPC64, "ppc64", ""},
		{elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_MIPS, "mips64le", ""},
		{elf.ELFCLASS32, elf.ELFDATA2MSB, elf.EM_MIPS, "mips", ""},
		{elf.ELFCLASS64, elf.ELFDATA2LSB, elf.EM_LOONGARCH, "loong64", ""},
	} {
		a, v, err := goArch(tc.class, tc.data, tc.m)
		if err != nil || a != tc.arch || v != tc.variant {
			t.Errorf("%v %v %v: %s %s %v, want %s %s", tc.class, tc.data, tc.m, a, v, err, tc.arch, tc.variant)
		}
	}
	if _, _, err := goArch(elf.ELFCLASS32, elf.ELFDATA2LSB, elf.EM_X86_64); err == nil {
		t.Error("32-bit x86-64: no error")
	}
}

// TestReadBinaryReal reads the headers of real Go builds for two
// architectures (a tiny program, cross-compiled).
func TestReadBinaryReal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Go programs")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	os.WriteFile(src, []byte("package main\n\nfunc main() { println(\"hi\") }\n"), 0o644)
	for _, arch := range []string{"amd64", "arm64"} {
		out := filepath.Join(dir, "prog-"+arch)
		cmd := exec.Command(gobin, "build", "-o", out, src)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0", "GOFLAGS=", "GO111MODULE=off")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build GOARCH=%s: %v\n%s", arch, err, b)
		}
		b := mustRead(t, out)
		if got := PlatformString(b.Platform); got != "linux/"+arch {
			t.Errorf("GOARCH=%s build: platform %s", arch, got)
		}
	}
}

func TestImageReproducible(t *testing.T) {
	b := mustRead(t, fakeELF(t, elf.EM_X86_64, ""))
	var digests []v1.Hash
	for range 2 {
		img, err := Image(b)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds of the same binary: %s and %s", digests[0], digests[1])
	}
}

func TestPushImage(t *testing.T) {
	host := testRegistry(t, "", "")
	hermeticDockerConfig(t, "", "", "")
	bin := fakeELF(t, elf.EM_X86_64, "")
	ref, err := ParseReference(host+"/mirrord", "1.2.3", false)
	if err != nil {
		t.Fatal(err)
	}
	if ref.TagStr() != "1.2.3" {
		t.Errorf("default tag %q", ref.TagStr())
	}
	digest, err := Push(context.Background(), ref, []Binary{mustRead(t, bin)})
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref.Context().Digest(digest.String()))
	if err != nil {
		t.Fatalf("pulling the pushed digest: %v", err)
	}
	checkImage(t, img, bin, "amd64")
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", mt)
	}
	// The tag points at the same manifest.
	desc, err := remote.Head(ref)
	if err != nil || desc.Digest != digest {
		t.Errorf("tag: %v %v, want %s", desc, err, digest)
	}
}

func TestPushIndex(t *testing.T) {
	host := testRegistry(t, "", "")
	hermeticDockerConfig(t, "", "", "")
	amd := fakeELF(t, elf.EM_X86_64, "")
	arm := fakeELF(t, elf.EM_AARCH64, "")
	ref, err := ParseReference(host+"/team/mirrord:multi", "1.2.3", false)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := Push(context.Background(), ref, []Binary{mustRead(t, amd), mustRead(t, arm)})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := idx.Digest(); d != digest {
		t.Errorf("index digest %s, Push returned %s", d, digest)
	}
	if mt, _ := idx.MediaType(); mt != types.OCIImageIndex {
		t.Errorf("index media type %s", mt)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("%d manifests, want 2", len(im.Manifests))
	}
	want := map[string]string{"amd64": amd, "arm64": arm}
	for _, m := range im.Manifests {
		if m.Platform == nil || m.Platform.OS != "linux" {
			t.Fatalf("manifest %s: platform %+v", m.Digest, m.Platform)
		}
		bin, ok := want[m.Platform.Architecture]
		if !ok {
			t.Fatalf("unexpected platform %+v", m.Platform)
		}
		delete(want, m.Platform.Architecture)
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, img, bin, m.Platform.Architecture)
	}
	// What a node of each architecture pulls.
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := remote.Image(ref, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: arch}))
		if err != nil {
			t.Fatal(err)
		}
		if cf, _ := img.ConfigFile(); cf.Architecture != arch {
			t.Errorf("pull for %s got %s", arch, cf.Architecture)
		}
	}

	// Two binaries of one platform cannot make an index.
	_, err = Push(context.Background(), ref, []Binary{mustRead(t, amd), mustRead(t, fakeELF(t, elf.EM_X86_64, ""))})
	if err == nil || !strings.Contains(err.Error(), "both linux/amd64") {
		t.Errorf("two amd64 binaries: %v", err)
	}
}

func TestPushAuth(t *testing.T) {
	host := testRegistry(t, "alice", "s3cret")
	bin := mustRead(t, fakeELF(t, elf.EM_X86_64, ""))
	ref, _ := ParseReference(host+"/mirrord:auth", "x", false)

	hermeticDockerConfig(t, "", "", "")
	_, err := Push(context.Background(), ref, []Binary{bin})
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "docker login "+host) {
		t.Errorf("push without credentials: %v", err)
	}

	hermeticDockerConfig(t, host, "alice", "s3cret")
	if _, err := Push(context.Background(), ref, []Binary{bin}); err != nil {
		t.Errorf("push with the docker config's credentials: %v", err)
	}
}

func TestPushUnreachable(t *testing.T) {
	hermeticDockerConfig(t, "", "", "")
	// A port nothing listens on.
	srv := httptest.NewServer(http.NotFoundHandler())
	host := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	ref, _ := ParseReference(host+"/mirrord", "x", true)
	_, err := Push(context.Background(), ref, []Binary{mustRead(t, fakeELF(t, elf.EM_X86_64, ""))})
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the registry "+host) {
		t.Errorf("unreachable registry: %v", err)
	}
}

func TestParseReference(t *testing.T) {
	ref, err := ParseReference("registry.example.com:5000/a/b", "0.1.0-dev", false)
	if err != nil || ref.Name() != "registry.example.com:5000/a/b:0.1.0-dev" || ref.Scheme() != "https" {
		t.Errorf("%v %v", ref, err)
	}
	ref, err = ParseReference("registry.example.com/a:v2", "0.1.0-dev", true)
	if err != nil || ref.TagStr() != "v2" || ref.Scheme() != "http" {
		t.Errorf("insecure: %v %v", ref, err)
	}
	if _, err := ParseReference("registry.example.com/a@sha256:"+strings.Repeat("a", 64), "x", false); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("digest reference: %v", err)
	}
	if _, err := ParseReference("Registry/UPPER", "x", false); err == nil {
		t.Error("upper-case repository: no error")
	}
	if _, err := ParseReference("registry.example.com/a", "bad+tag", false); err == nil || !strings.Contains(err.Error(), `version "bad+tag"`) {
		t.Errorf("invalid default tag: %v", err)
	}
}

func TestWriteTar(t *testing.T) {
	bin := fakeELF(t, elf.EM_AARCH64, "")
	ref, _ := ParseReference("registry.example.com/mirrord:t", "x", false)
	out := filepath.Join(t.TempDir(), "agent.tar")
	id, err := WriteTar(out, ref, mustRead(t, bin))
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag("registry.example.com/mirrord:t")
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("reading the tar back: %v", err)
	}
	checkImage(t, img, bin, "arm64")
	if got, _ := img.ConfigName(); got != id {
		t.Errorf("image ID %s, WriteTar returned %s", got, id)
	}
	if _, err := os.Stat(out + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}
}

func TestKindMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	err := KindLoad(context.Background(), "c", "x.tar", io.Discard)
	if !errors.Is(err, ErrNoKind) || !strings.Contains(err.Error(), "not installed") {
		t.Errorf("no kind: %v", err)
	}
}

func TestKindLoad(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("shell script stand-in")
	}
	dir := t.TempDir()
	argsFile := filepath.Join(dir, "args")
	script := "#!/bin/sh\necho \"$@\" > " + argsFile + "\n"
	os.WriteFile(filepath.Join(dir, "kind"), []byte(script), 0o755)
	t.Setenv("PATH", dir)
	if err := KindLoad(context.Background(), "dev", "/tmp/a.tar", io.Discard); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(argsFile)
	if got := strings.TrimSpace(string(b)); got != "load image-archive /tmp/a.tar --name dev" {
		t.Errorf("kind called with %q", got)
	}
}

func TestPushErrorHTTPS(t *testing.T) {
	ref, _ := ParseReference("registry.example.com/mirrord", "x", false)
	err := pushError(ref, errors.New(`Get "https://registry.example.com/v2/": http: server gave HTTP response to HTTPS client`))
	if !strings.Contains(err.Error(), "add --insecure") {
		t.Errorf("plain-HTTP registry: %v", err)
	}
}
