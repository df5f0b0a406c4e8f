package agentimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/mirrord-go/mirrord/version"
)

// Entrypoint is the image's entrypoint: where the layer puts the binary.
// kube's agent Job runs the same path with `agent ...` as its arguments.
const Entrypoint = "/mirrord"

// epoch is every timestamp in the image, for reproducible digests.
var epoch = time.Unix(0, 0).UTC()

// Binary is a mirrord executable for one platform.
type Binary struct {
	Path     string
	Platform v1.Platform
}

// ReadBinary checks that path is a statically linked Linux ELF executable
// and reads its platform (linux/ARCH[/VARIANT]) from the ELF header.
func ReadBinary(path string) (Binary, error) {
	file, err := os.Open(path)
	if err != nil {
		return Binary{}, err
	}
	defer file.Close()
	magic := make([]byte, len(elf.ELFMAG))
	if _, err := io.ReadFull(file, magic); err != nil || string(magic) != elf.ELFMAG {
		return Binary{}, errors.New("not an ELF executable: a Linux build of mirrord is needed")
	}
	f, err := elf.NewFile(file)
	if err != nil {
		return Binary{}, fmt.Errorf("a damaged ELF file: %w", err)
	}
	if f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
		return Binary{}, fmt.Errorf("an ELF executable for %v, not Linux", f.OSABI)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return Binary{}, fmt.Errorf("an ELF file of type %v, not an executable", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp := "a dynamic loader"
			if b, err := io.ReadAll(io.LimitReader(p.Open(), 256)); err == nil && len(b) > 0 {
				interp = strings.TrimRight(string(b), "\x00")
			}
			return Binary{}, fmt.Errorf("dynamically linked (it needs %s), but the agent image has no C library: build mirrord with CGO_ENABLED=0, as `make build` does", interp)
		}
	}
	if f.Type == elf.ET_DYN && f.Entry == 0 {
		return Binary{}, errors.New("a shared library, not an executable")
	}
	arch, variant, err := goArch(f.Class, f.Data, f.Machine)
	if err != nil {
		return Binary{}, err
	}
	return Binary{Path: path, Platform: v1.Platform{OS: "linux", Architecture: arch, Variant: variant}}, nil
}

// goArch maps an ELF header to the image platform's architecture (GOARCH
// names, as the OCI image spec uses them).
func goArch(class elf.Class, data elf.Data, m elf.Machine) (arch, variant string, err error) {
	is64 := class == elf.ELFCLASS64
	le := data == elf.ELFDATA2LSB
	switch {
	case m == elf.EM_X86_64 && is64:
		return "amd64", "", nil
	case m == elf.EM_AARCH64 && is64:
		return "arm64", "", nil
	case m == elf.EM_386 && !is64:
		return "386", "", nil
	case m == elf.EM_ARM && !is64:
		// The ELF header does not tell GOARM; v7 is what clusters run.
		return "arm", "v7", nil
	case m == elf.EM_PPC64 && is64 && le:
		return "ppc64le", "", nil
	case m == elf.EM_PPC64 && is64:
		return "ppc64", "", nil
	case m == elf.EM_S390 && is64:
		return "s390x", "", nil
	case m == elf.EM_RISCV && is64:
		return "riscv64", "", nil
	case m == elf.EM_LOONGARCH && is64:
		return "loong64", "", nil
	case m == elf.EM_MIPS && is64 && le:
		return "mips64le", "", nil
	case m == elf.EM_MIPS && is64:
		return "mips64", "", nil
	case m == elf.EM_MIPS && le:
		return "mipsle", "", nil
	case m == elf.EM_MIPS:
		return "mips", "", nil
	}
	return "", "", fmt.Errorf("an ELF executable for %v (%v), an architecture mirrord is not built for", m, class)
}

// PlatformString is "linux/amd64" or "linux/arm/v7".
func PlatformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Image builds the image of one binary: a layer with the binary at
// /mirrord (mode 0755) and /tmp (01777), the entrypoint /mirrord with
// `agent` as its default argument, and the binary's platform. OCI media
// types throughout.
func Image(b Binary) (v1.Image, error) {
	blob, err := layerBlob(b.Path)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blob)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "mirrord agent-image", Comment: "the mirrord binary"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = b.Platform.OS, b.Platform.Architecture, b.Platform.Variant
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = []string{Entrypoint}
	cf.Config.Cmd = []string{"agent"}
	cf.Config.WorkingDir = "/"
	return mutate.ConfigFile(img, cf)
}

// layerBlob is the gzipped layer tar, built once in memory so that digest,
// diff ID and upload read the same bytes without compressing again.
func layerBlob(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf) // no name, zero mtime: reproducible
	tw := tar.NewWriter(zw)
	hdrs := []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, ModTime: epoch, Format: tar.FormatPAX},
		{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(Entrypoint, "/"), Mode: 0o755, Size: st.Size(), ModTime: epoch, Format: tar.FormatPAX},
	}
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			n, err := io.Copy(tw, f)
			if err != nil {
				return nil, err
			}
			if n != h.Size {
				return nil, fmt.Errorf("%s changed while it was read", path)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Index builds an OCI image index with one image per binary, each
// described with its platform. The binaries' platforms must differ.
func Index(bins []Binary) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	seen := map[string]string{}
	for _, b := range bins {
		p := PlatformString(b.Platform)
		if other, ok := seen[p]; ok {
			return nil, fmt.Errorf("%s and %s are both %s builds; an image index holds one image per platform", other, b.Path, p)
		}
		seen[p] = b.Path
		img, err := Image(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Path, err)
		}
		platform := b.Platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &platform}})
	}
	return idx, nil
}

// ParseReference parses REGISTRY/REPO[:TAG] as the tag to push to; the tag
// defaults to defaultTag (the version of this build). insecure makes the
// registry plain HTTP.
func ParseReference(s, defaultTag string, insecure bool) (name.Tag, error) {
	if strings.Contains(s, "@") {
		return name.Tag{}, errors.New("a digest reference cannot be pushed to; give REGISTRY/REPO[:TAG]")
	}
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	// After the last slash a colon starts the tag (before it, a port).
	if !strings.Contains(s[strings.LastIndex(s, "/")+1:], ":") {
		tag, err := name.NewTag(s+":"+defaultTag, opts...)
		if err != nil {
			return name.Tag{}, fmt.Errorf("%w (the tag defaults to this build's version %q; give one with :TAG)", err, defaultTag)
		}
		return tag, nil
	}
	return name.NewTag(s, opts...)
}

// Push builds the image of the binaries (an image index when there are
// several) and pushes it to ref with the credentials of the docker config
// (authn.DefaultKeychain: ~/.docker/config.json, $DOCKER_CONFIG, credential
// helpers). It returns the digest of the pushed manifest or index.
func Push(ctx context.Context, ref name.Tag, bins []Binary) (v1.Hash, error) {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithUserAgent("mirrord/" + version.Version),
	}
	var (
		digest v1.Hash
		err    error
	)
	if len(bins) == 1 {
		var img v1.Image
		if img, err = Image(bins[0]); err != nil {
			return v1.Hash{}, fmt.Errorf("%s: %w", bins[0].Path, err)
		}
		if digest, err = img.Digest(); err != nil {
			return v1.Hash{}, err
		}
		err = remote.Write(ref, img, opts...)
	} else {
		var idx v1.ImageIndex
		if idx, err = Index(bins); err != nil {
			return v1.Hash{}, err
		}
		if digest, err = idx.Digest(); err != nil {
			return v1.Hash{}, err
		}
		err = remote.WriteIndex(ref, idx, opts...)
	}
	if err != nil {
		return v1.Hash{}, pushError(ref, err)
	}
	return digest, nil
}

// pushError adds what to do about the common failures.
func pushError(ref name.Tag, err error) error {
	reg := ref.RegistryStr()
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		return fmt.Errorf("the registry %s refused the push (%w); log in with `docker login %s` (the credentials come from the docker config)", reg, err, reg)
	}
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Errorf("the registry %s speaks plain HTTP; add --insecure (%w)", reg, err)
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &oe) || (errors.As(err, &ne) && ne.Timeout()) {
		if ref.Scheme() == "http" {
			return fmt.Errorf("cannot reach the registry %s (%w); check the address, and that the registry runs", reg, err)
		}
		return fmt.Errorf("cannot reach the registry %s (%w); check the address, and add --insecure for a plain-HTTP registry", reg, err)
	}
	return err
}

// WriteTar writes the image of b as a docker-archive tar tagged ref, the
// format of `docker load`, `ctr -n k8s.io images import` and `kind load
// image-archive`. The file is replaced only when it is complete. It returns
// the image ID (the digest of the image's config).
func WriteTar(path string, ref name.Tag, b Binary) (v1.Hash, error) {
	img, err := Image(b)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("%s: %w", b.Path, err)
	}
	tmp := path + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		os.Remove(tmp)
		return v1.Hash{}, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return v1.Hash{}, err
	}
	return img.ConfigName()
}

// ErrNoKind is returned by KindLoad when the kind command is not installed.
var ErrNoKind = errors.New("the kind command is not installed (not found in $PATH); install it (https://kind.sigs.k8s.io), or write the image with --tar FILE and load it yourself")

// KindPath finds the kind command.
func KindPath() (string, error) {
	p, err := exec.LookPath("kind")
	if err != nil {
		return "", ErrNoKind
	}
	return p, nil
}

// KindLoad runs `kind load image-archive TAR --name CLUSTER`, with kind's
// output going to out.
func KindLoad(ctx context.Context, cluster, tarPath string, out io.Writer) error {
	kind, err := KindPath()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, kind, "load", "image-archive", tarPath, "--name", cluster)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kind load image-archive %s --name %s: %w", tarPath, cluster, err)
	}
	return nil
}
