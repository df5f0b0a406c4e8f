package goshim

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// setupMounts replaces files such as /etc/resolv.conf with the parent's
// versions, visible only in the sandbox's mount namespace.
func setupMounts(binds []bindMount) error {
	if len(binds) == 0 {
		return nil
	}
	// The new mount namespace starts as a copy whose mounts may still
	// propagate to and from the host's (systemd makes / shared). Making it
	// private keeps our bind mounts from leaking out.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return capError("making the sandbox's mounts private", err)
	}
	for _, b := range binds {
		if err := bindFile(b); err != nil {
			return err
		}
	}
	return nil
}

// bindFile bind-mounts b.Source over b.Target. A bind mount cannot be
// placed on a symlink (it would follow it anyway), so when the target is
// one, e.g. /etc/resolv.conf -> /run/systemd/resolve/stub-resolv.conf, the
// mount goes onto the file it points to.
func bindFile(b bindMount) error {
	target, err := filepath.EvalSymlinks(b.Target)
	if errors.Is(err, fs.ErrNotExist) {
		if b.Optional {
			return nil
		}
		return fmt.Errorf("cannot replace %s in the sandbox: %v; the file (or, for a symlink, the file it points to) "+
			"must exist to be mounted over: create it, e.g. `touch %s` as root", b.Target, err, b.Target)
	}
	if err != nil {
		return fmt.Errorf("resolving %s: %w", b.Target, err)
	}
	if err := unix.Mount(b.Source, target, "", unix.MS_BIND, ""); err != nil {
		return capError(fmt.Sprintf("bind-mounting the sandbox's %s over %s", b.Target, target), err)
	}
	return nil
}
