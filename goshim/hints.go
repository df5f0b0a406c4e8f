package goshim

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// userNSHint names the setting that keeps unprivileged user namespaces
// from working here, read from the sysctls that control them.
func userNSHint() string {
	var hints []string
	if sysctl("kernel/unprivileged_userns_clone") == "0" {
		hints = append(hints, "enable unprivileged user namespaces with `sysctl -w kernel.unprivileged_userns_clone=1`")
	}
	if sysctl("user/max_user_namespaces") == "0" {
		hints = append(hints, "allow user namespaces with `sysctl -w user.max_user_namespaces=15000`")
	}
	if h := appArmorHint(); h != "" {
		hints = append(hints, h)
	}
	if len(hints) == 0 {
		return "allow unprivileged user namespaces: `sysctl -w kernel.unprivileged_userns_clone=1` (Debian kernels), " +
			"`sysctl -w user.max_user_namespaces=15000` (limit reached or zero), " +
			"`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (Ubuntu 23.10+); " +
			"inside a container, run it with seccomp/AppArmor profiles that permit unshare(CLONE_NEWUSER)"
	}
	return strings.Join(hints, "; ")
}

// appArmorHint explains the Ubuntu restriction under which a user
// namespace is created but holds no capabilities, so every setup step
// fails with EPERM.
func appArmorHint() string {
	if sysctl("kernel/apparmor_restrict_unprivileged_userns") != "1" {
		return ""
	}
	return "AppArmor restricts unprivileged user namespaces: run `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` " +
		"or give mirrord an AppArmor profile with the `userns,` rule"
}

func sysctl(name string) string {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// capError wraps a failed privileged step of the helper. EPERM there
// means the user namespace grants no capabilities, which is a property of
// the machine the user can change, so it is reported as ErrUserNamespace.
func capError(what string, err error) error {
	if !errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("%s: %w", what, err)
	}
	hint := appArmorHint()
	if hint == "" {
		hint = "the kernel denies capabilities in the sandbox's user namespace (a seccomp or LSM policy?)"
	}
	return &helperError{kind: kindUserNS, msg: fmt.Sprintf("%s: %v; %s", what, err, hint)}
}

// tunOpenError explains why /dev/net/tun could not be opened.
func tunOpenError(err error) error {
	const dev = "/dev/net/tun"
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
		return &helperError{kind: kindTUN, msg: fmt.Sprintf(
			"opening %s: %v: the TUN driver is not available; load it with `modprobe tun` "+
				"(or create the device with `mknod %s c 10 200 && chmod 0666 %s`)", dev, err, dev, dev)}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		mode := "unknown mode"
		if st, serr := os.Stat(dev); serr == nil {
			mode = fmt.Sprintf("mode %#o", st.Mode().Perm())
		}
		return &helperError{kind: kindTUN, msg: fmt.Sprintf(
			"opening %s: %v: the device (%s) is not accessible to uid %d; allow it with `chmod 0666 %s` "+
				"(safe: creating an interface still needs CAP_NET_ADMIN, which only the sandbox has)",
			dev, err, mode, os.Getuid(), dev)}
	}
	return &helperError{kind: kindTUN, msg: fmt.Sprintf("opening %s: %v", dev, err)}
}
