package goshim

import (
	"maps"

	"golang.org/x/sys/unix"
)

// sysKind is the shape of an intercepted system call, after its arguments
// are put in the order of its *at form (see sysCall.args).
type sysKind int

const (
	sysOpen      sysKind = iota // dirfd, path, flags, mode
	sysOpenat2                  // dirfd, path, *open_how, size
	sysStat                     // dirfd, path, *struct stat, flags
	sysStatx                    // dirfd, path, flags, mask, *struct statx
	sysAccess                   // dirfd, path, mode, flags
	sysReadlink                 // dirfd, path, buf, bufsiz
	sysUnlink                   // dirfd, path, flags
	sysMkdir                    // dirfd, path, mode
	sysRename                   // olddirfd, oldpath, newdirfd, newpath, flags
	sysGetxattr                 // dirfd, path, name, value, size, AT_SYMLINK_NOFOLLOW or 0
	sysListxattr                // dirfd, path, list, size, AT_SYMLINK_NOFOLLOW or 0
	sysStatfs                   // dirfd, path, *struct statfs
	sysChmod                    // dirfd, path, mode, flags
	sysChown                    // dirfd, path, uid, gid, flags
	sysUtimens                  // dirfd, path, *struct timespec[2], flags
	sysTruncate                 // dirfd, path, length
	sysLink                     // olddirfd, oldpath, newdirfd, newpath, flags
	sysSymlink                  // target, newdirfd, newpath
	sysUtimes                   // dirfd, path, *struct timeval[2] (NULL: now)
	sysUtime                    // dirfd, path, *struct utimbuf (NULL: now)
	sysChdir                    // dirfd, path
	sysGetcwd                   // buf, size
	sysBind                     // fd, addr, addrlen
	sysConnect                  // fd, addr, addrlen
	sysListen                   // fd, backlog
	sysSendto                   // fd, buf, len, flags, addr, addrlen
	sysAccept                   // fd, addr, addrlen, flags
	sysPeername                 // fd, addr, addrlen
)

// sysCall describes one intercepted system call.
type sysCall struct {
	name  string
	kind  sysKind
	write bool // changes the file system: intercepted only with Files.RemoteWrites
	// args puts the raw arguments in the order of the *at form (nil: they
	// already are), e.g. stat(path, buf) becomes (AT_FDCWD, path, buf, 0).
	args func(a [6]uint64) [6]uint64
}

// atFDCWD is AT_FDCWD as a raw system call argument.
const atFDCWD = uint64(1<<64 + unix.AT_FDCWD)

// syscallsAt are the *at system calls every architecture has.
var syscallsAt = map[int]sysCall{
	unix.SYS_OPENAT:     {name: "openat", kind: sysOpen},
	unix.SYS_OPENAT2:    {name: "openat2", kind: sysOpenat2},
	unix.SYS_STATX:      {name: "statx", kind: sysStatx},
	unix.SYS_FACCESSAT:  {name: "faccessat", kind: sysAccess, args: func(a [6]uint64) [6]uint64 { a[3] = 0; return a }},
	unix.SYS_FACCESSAT2: {name: "faccessat2", kind: sysAccess},
	unix.SYS_READLINKAT: {name: "readlinkat", kind: sysReadlink},
	unix.SYS_UNLINKAT:   {name: "unlinkat", kind: sysUnlink, write: true},
	unix.SYS_MKDIRAT:    {name: "mkdirat", kind: sysMkdir, write: true},
	unix.SYS_RENAMEAT:   {name: "renameat", kind: sysRename, write: true, args: func(a [6]uint64) [6]uint64 { a[4] = 0; return a }},
	unix.SYS_RENAMEAT2:  {name: "renameat2", kind: sysRename, write: true},
	unix.SYS_FCHMODAT:   {name: "fchmodat", kind: sysChmod, write: true, args: func(a [6]uint64) [6]uint64 { a[3] = 0; return a }},
	unix.SYS_FCHMODAT2:  {name: "fchmodat2", kind: sysChmod, write: true},
	unix.SYS_FCHOWNAT:   {name: "fchownat", kind: sysChown, write: true},
	unix.SYS_UTIMENSAT:  {name: "utimensat", kind: sysUtimens, write: true},
	unix.SYS_LINKAT:     {name: "linkat", kind: sysLink, write: true},
	unix.SYS_SYMLINKAT:  {name: "symlinkat", kind: sysSymlink, write: true},
}

// syscallsPath are the path calls that have no *at form (before Linux
// 6.13's getxattrat, which libc does not use) on every architecture.
var syscallsPath = map[int]sysCall{
	unix.SYS_GETXATTR:   {name: "getxattr", kind: sysGetxattr, args: prepend(4, 0)},
	unix.SYS_LGETXATTR:  {name: "lgetxattr", kind: sysGetxattr, args: prepend(4, unix.AT_SYMLINK_NOFOLLOW)},
	unix.SYS_LISTXATTR:  {name: "listxattr", kind: sysListxattr, args: prepend(3, 0)},
	unix.SYS_LLISTXATTR: {name: "llistxattr", kind: sysListxattr, args: prepend(3, unix.AT_SYMLINK_NOFOLLOW)},
	unix.SYS_STATFS:     {name: "statfs", kind: sysStatfs, args: prepend(2)},
	unix.SYS_TRUNCATE:   {name: "truncate", kind: sysTruncate, write: true, args: prepend(2)},
	// chdir into a remote directory (tracer.go) and getcwd there: the
	// kernel's answer for a directory of the view is "(unreachable)/...".
	// fchdir needs nothing: a remote directory's fd is the view's.
	unix.SYS_CHDIR:  {name: "chdir", kind: sysChdir, args: prepend(1)},
	unix.SYS_GETCWD: {name: "getcwd", kind: sysGetcwd},
}

// syscallsNet are the socket calls through which the program says it
// means this machine (see hostnet.go). sendto is sent to the supervisor
// only when it names a destination (the filter checks its fifth
// argument), so a connected socket's sends never stop.
var syscallsNet = map[int]sysCall{
	unix.SYS_BIND:    {name: "bind", kind: sysBind},
	unix.SYS_CONNECT: {name: "connect", kind: sysConnect},
	unix.SYS_LISTEN:  {name: "listen", kind: sysListen},
	unix.SYS_SENDTO:  {name: "sendto", kind: sysSendto},
}

// syscallsPeers are the calls that show a connection's peer, intercepted
// with WithIncomingPeers (peers.go).
var syscallsPeers = map[int]sysCall{
	unix.SYS_ACCEPT:      {name: "accept", kind: sysAccept, args: func(a [6]uint64) [6]uint64 { a[3] = 0; return a }},
	unix.SYS_ACCEPT4:     {name: "accept4", kind: sysAccept},
	unix.SYS_GETPEERNAME: {name: "getpeername", kind: sysPeername},
}

// interceptedSyscalls returns the system call table of this architecture:
// the socket calls and the opens always (the socket tables under /proc
// are this machine's, see hostnet.go), the other file calls when files
// is set, the write calls among them only when writes may go remote,
// accept and getpeername with peers (peers.go), and getpeername also when
// unix sockets may be relayed (unixstreams.go).
func interceptedSyscalls(files, remoteWrites, peers, unixStreams bool) map[int]sysCall {
	out := maps.Clone(syscallsNet)
	if peers {
		maps.Copy(out, syscallsPeers)
	}
	if unixStreams {
		out[unix.SYS_GETPEERNAME] = syscallsPeers[unix.SYS_GETPEERNAME]
	}
	for _, t := range []map[int]sysCall{syscallsAt, syscallsPath, syscallsArch} {
		for nr, c := range t {
			isOpen := c.kind == sysOpen || c.kind == sysOpenat2
			if isOpen || files && (!c.write || remoteWrites) {
				out[nr] = c
			}
		}
	}
	return out
}

// prepend returns an args function for a legacy call without a dirfd:
// AT_FDCWD comes first, then the raw arguments, then the fixed ones.
func prepend(raw int, fixed ...uint64) func(a [6]uint64) [6]uint64 {
	return func(a [6]uint64) [6]uint64 {
		var out [6]uint64
		out[0] = atFDCWD
		copy(out[1:], a[:raw])
		copy(out[1+raw:], fixed)
		return out
	}
}
