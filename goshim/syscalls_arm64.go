package goshim

import "golang.org/x/sys/unix"

const auditArch = unix.AUDIT_ARCH_AARCH64

// syscallsArch: arm64 has only the *at forms; newfstatat is named fstatat.
var syscallsArch = map[int]sysCall{
	unix.SYS_FSTATAT: {name: "newfstatat", kind: sysStat},
}
