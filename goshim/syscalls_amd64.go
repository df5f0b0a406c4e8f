package goshim

import "golang.org/x/sys/unix"

const auditArch = unix.AUDIT_ARCH_X86_64

// syscallsArch are amd64's legacy path calls, which glibc and static C
// programs still use.
var syscallsArch = map[int]sysCall{
	unix.SYS_NEWFSTATAT: {name: "newfstatat", kind: sysStat},
	unix.SYS_OPEN:       {name: "open", kind: sysOpen, args: prepend(3)},
	unix.SYS_STAT:       {name: "stat", kind: sysStat, args: prepend(2, 0)},
	unix.SYS_LSTAT:      {name: "lstat", kind: sysStat, args: prepend(2, unix.AT_SYMLINK_NOFOLLOW)},
	unix.SYS_ACCESS:     {name: "access", kind: sysAccess, args: prepend(2, 0)},
	unix.SYS_READLINK:   {name: "readlink", kind: sysReadlink, args: prepend(3)},
	unix.SYS_UNLINK:     {name: "unlink", kind: sysUnlink, write: true, args: prepend(1, 0)},
	unix.SYS_RMDIR:      {name: "rmdir", kind: sysUnlink, write: true, args: prepend(1, unix.AT_REMOVEDIR)},
	unix.SYS_MKDIR:      {name: "mkdir", kind: sysMkdir, write: true, args: prepend(2)},
	unix.SYS_RENAME: {name: "rename", kind: sysRename, write: true, args: func(a [6]uint64) [6]uint64 {
		return [6]uint64{atFDCWD, a[0], atFDCWD, a[1], 0}
	}},
	unix.SYS_CHMOD:  {name: "chmod", kind: sysChmod, write: true, args: prepend(2, 0)},
	unix.SYS_CHOWN:  {name: "chown", kind: sysChown, write: true, args: prepend(3, 0)},
	unix.SYS_LCHOWN: {name: "lchown", kind: sysChown, write: true, args: prepend(3, unix.AT_SYMLINK_NOFOLLOW)},
	unix.SYS_LINK: {name: "link", kind: sysLink, write: true, args: func(a [6]uint64) [6]uint64 {
		return [6]uint64{atFDCWD, a[0], atFDCWD, a[1], 0}
	}},
	unix.SYS_SYMLINK: {name: "symlink", kind: sysSymlink, write: true, args: func(a [6]uint64) [6]uint64 {
		return [6]uint64{a[0], atFDCWD, a[1]}
	}},
	// The obsolete time calls, which Go's syscall package and old static
	// programs make; glibc uses utimensat for all of them.
	unix.SYS_UTIME:     {name: "utime", kind: sysUtime, write: true, args: prepend(2)},
	unix.SYS_UTIMES:    {name: "utimes", kind: sysUtimes, write: true, args: prepend(2)},
	unix.SYS_FUTIMESAT: {name: "futimesat", kind: sysUtimes, write: true},
}
