package container

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// SandboxFiles are the files the sandbox of a static or Go program mounts
// its own versions over (goshim), which must therefore exist in the
// container. The runtimes do not always make them: podman gives a
// container no /etc/resolv.conf with --network none, and no runtime an
// /etc/hosts with --no-hosts.
var SandboxFiles = []string{"/etc/resolv.conf", "/etc/hosts"}

// EnsureFiles creates each of paths (under root) that is missing, empty,
// with its directory. A container's own files only: the program does not
// see them in the sandbox (mounted over) and an empty resolv.conf or
// hosts reads as a missing one. It returns the files it could not make
// (a read-only root, a user other than root).
func EnsureFiles(root string, paths []string) error {
	var errs []error
	for _, p := range paths {
		p = filepath.Join(root, p)
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		// (Through a dangling symlink: the file it points to.)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f.Close()
	}
	return errors.Join(errs...)
}
