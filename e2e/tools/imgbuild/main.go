// Command imgbuild writes a single-layer container image as a docker-archive
// tar (the format `ctr images import` and `docker load` read) from files on
// this machine. No Docker daemon and no registry are involved: the e2e
// cluster has to build every image it runs because no image registry is
// reachable from the machines it runs on.
//
// The output is reproducible (fixed timestamps and owners), so the printed
// image ID changes only when the content does; the harness uses that to skip
// re-importing an image the cluster already has.
//
//	imgbuild -o app.tar -ref example.com/app:e2e \
//	    -file ./bin/app=/app:0755 -dir /tmp:01777 -symlink /bin/sh=busybox \
//	    -entrypoint /app -cmd serve -env MODE=e2e
//
// It prints the image ID (the digest of the image config, which is what the
// CRI reports as the image ID) on stdout.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// entry is one file system object of the layer.
type entry struct {
	name   string // absolute path in the image
	src    string // file on this machine (regular files)
	link   string // symlink target
	mode   int64
	isDir  bool
	isLink bool
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	var (
		out, ref, workdir, user string
		files, dirs, links      multi
		entrypoint, cmd, env    multi
	)
	flag.StringVar(&out, "o", "", "output docker-archive tar")
	flag.StringVar(&ref, "ref", "", "image reference (name:tag) recorded in the archive")
	flag.StringVar(&workdir, "workdir", "/", "working directory")
	flag.StringVar(&user, "user", "", "user (default root)")
	flag.Var(&files, "file", "SRC=DST[:MODE] regular file to copy (repeatable; MODE octal, default 0755)")
	flag.Var(&dirs, "dir", "DST[:MODE] directory to create (repeatable)")
	flag.Var(&links, "symlink", "DST=TARGET symlink (repeatable)")
	flag.Var(&entrypoint, "entrypoint", "entrypoint argument (repeatable, in order)")
	flag.Var(&cmd, "cmd", "cmd argument (repeatable, in order)")
	flag.Var(&env, "env", "KEY=VALUE environment variable (repeatable)")
	flag.Parse()
	if out == "" || ref == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	id, err := build(out, ref, workdir, user, files, dirs, links, entrypoint, cmd, env)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imgbuild:", err)
		os.Exit(1)
	}
	fmt.Println(id)
}

func build(out, ref, workdir, user string, files, dirs, links, entrypoint, cmd, env []string) (string, error) {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return "", fmt.Errorf("reference %q: %w", ref, err)
	}
	var entries []entry
	for _, f := range files {
		src, dst, ok := strings.Cut(f, "=")
		if !ok {
			return "", fmt.Errorf("-file %q: want SRC=DST[:MODE]", f)
		}
		dst, mode, err := splitMode(dst, 0o755)
		if err != nil {
			return "", err
		}
		entries = append(entries, entry{name: dst, src: src, mode: mode})
	}
	for _, d := range dirs {
		dst, mode, err := splitMode(d, 0o755)
		if err != nil {
			return "", err
		}
		entries = append(entries, entry{name: dst, mode: mode, isDir: true})
	}
	for _, l := range links {
		dst, target, ok := strings.Cut(l, "=")
		if !ok {
			return "", fmt.Errorf("-symlink %q: want DST=TARGET", l)
		}
		entries = append(entries, entry{name: dst, link: target, mode: 0o777, isLink: true})
	}
	layerTar, err := writeLayer(entries)
	if err != nil {
		return "", err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = entrypoint
	cf.Config.Cmd = cmd
	cf.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	cf.Config.WorkingDir = workdir
	cf.Config.User = user
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return "", err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	id, err := img.ConfigName()
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

func splitMode(s string, def int64) (string, int64, error) {
	p, m, ok := strings.Cut(s, ":")
	if !ok {
		return p, def, nil
	}
	mode, err := strconv.ParseInt(m, 8, 32)
	if err != nil {
		return "", 0, fmt.Errorf("mode in %q: %w", s, err)
	}
	return p, mode, nil
}

// writeLayer writes the entries, and every parent directory they need, as an
// uncompressed tar with fixed owners and timestamps.
func writeLayer(entries []entry) ([]byte, error) {
	byName := map[string]entry{}
	for _, e := range entries {
		if !path.IsAbs(e.name) {
			return nil, fmt.Errorf("%q: image paths must be absolute", e.name)
		}
		e.name = path.Clean(e.name)
		byName[e.name] = e
		for d := path.Dir(e.name); d != "/"; d = path.Dir(d) {
			if _, ok := byName[d]; !ok {
				byName[d] = entry{name: d, mode: 0o755, isDir: true}
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names) // parents sort before their children
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	for _, n := range names {
		e := byName[n]
		hdr := &tar.Header{Name: strings.TrimPrefix(n, "/"), Mode: e.mode, ModTime: epoch, Format: tar.FormatPAX}
		var data []byte
		switch {
		case e.isDir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
		case e.isLink:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.link
		default:
			var err error
			if data, err = os.ReadFile(e.src); err != nil {
				return nil, err
			}
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
