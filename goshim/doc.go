// Package goshim runs a program inside private user, network, mount and
// UTS namespaces whose only network is a TUN device, and hands the TUN
// file descriptor to the mirrord process, which serves it with package
// netstack. The program and all its children see the target's network
// without any hook in the program: this is how Go and other static binaries
// (which LD_PRELOAD cannot reach) are run, and for now every binary.
//
// The mirrord process is multi-threaded and so cannot enter a new user
// namespace itself. Start re-executes the mirrord binary as a small helper
// (the hidden "goshim-helper" command, see HelperMain) created directly in
// the new namespaces; the helper sets up the device, addresses, routes and
// bind mounts, passes the TUN fd back over a socketpair, waits for the go
// signal and then execs the program in place, so the program is the
// direct child of mirrord: exit status and signals need no relay process.
//
// # This machine's loopback
//
// The program's loopback is this machine's, not the sandbox's: just before
// exec the helper sets no_new_privs and installs a seccomp filter that
// sends bind, connect, listen, sendto with a destination and the opens to
// mirrord's supervisor (for every program, with or without WithFiles).
// Where the program means this machine (a loopback or wildcard bind, a
// connect to loopback, an abstract unix address), the supervisor swaps
// its socket for one made in mirrord's network namespace, with the same
// options, under the same descriptor number (SECCOMP_ADDFD_FLAG_SETFD), and
// lets the kernel run the call; its servers are reported to WithListenHook.
// Everything else stays in the sandbox and reaches the target through the
// TUN device. The socket tables under /proc read as this machine's. See
// hostnet.go for the rules and their limits.
//
// With WithIncomingPeers the filter also sends accept, accept4 and
// getpeername, so that a connection mirrord delivered to one of the
// program's servers shows the target's client as its peer rather than
// mirrord's end on loopback (peers.go).
//
// # Unix sockets elsewhere
//
// With WithUnixStreams, a stream connect to a unix socket path is offered
// to a UnixRelay, which may name a listener of mirrord's that stands for
// the target's socket at that path; the supervisor connects the program's
// own socket to it, and answers getpeername for it with the path the
// program asked for. See unixstreams.go.
//
// # Files
//
// With WithFiles the program also sees the target's files, per the fs
// rules (a Classifier: local, remote, not found). The program's file
// system calls stop in the kernel and mirrord answers them: just before
// exec the helper sets no_new_privs and installs a seccomp filter that
// sends openat, openat2, newfstatat, statx, faccessat(2), readlinkat, the
// xattr reads, statfs, chdir and getcwd (and on amd64 open, stat, lstat,
// access, readlink), plus unlinkat, mkdirat, renameat(2), the metadata
// changes and links (and unlink, rmdir, mkdir, rename, chmod, chown, link,
// symlink, utime, utimes, futimesat) when writes may go remote, to a
// user-notification listener, which it passes to mirrord over the
// socketpair. Every other system call runs untouched.
//
// The supervisor (supervisor.go) receives each notification, reads the
// path from the stopped thread's memory (process_vm_readv; a notification
// names a thread, not a process), makes it absolute against the thread's
// cwd or dirfd (/proc/<tid>/cwd, /proc/<tid>/fd/N) and classifies it:
//
//   - local: SECCOMP_USER_NOTIF_FLAG_CONTINUE, the kernel runs the call
//     itself. /proc, /sys, /dev, the program's executable and ELF
//     interpreter, shared objects under the lib directories, the loader's
//     cache and the files the sandbox replaced (resolv.conf, hostname)
//     always stay local. Measured: 30 µs added per openat on a 2-core VM
//     (bench/results.md).
//   - not found: ENOENT.
//   - remote: the operation runs on the target, off the receiving loop,
//     after SECCOMP_IOCTL_NOTIF_ID_VALID confirms the thread still waits
//     in this call. An open answers with SECCOMP_IOCTL_NOTIF_ADDFD
//     (SECCOMP_ADDFD_FLAG_SEND: the fd number is the call's result); stat
//     calls write the struct into the thread's memory and return 0;
//     readlink writes the link; unlink, mkdir and rename return the
//     target's result (a rename between a local and a remote path is
//     EXDEV, so mv copies); chdir makes the thread itself fchdir to the
//     directory's fd in the view, through a tracer process (tracer.go),
//     and getcwd in a directory of the view answers the target's path.
//
// Remote opens get real kernel files from the FUSE view (fusefs.go): the
// helper opens /dev/fuse and creates a FUSE mount with the new mount API
// (fsopen, fsconfig, fsmount) inside the sandbox's user namespace. The
// mount is never attached to a path, so the program cannot see it; its
// root fd goes to mirrord with the TUN fd, and mirrord serves the device
// with go-fuse from the agent. A remote open is an openat2(RESOLVE_IN_ROOT)
// below that root, whose fd is injected. Reads page in on demand (1 MiB
// requests once a file is read sequentially, so a large file is never
// held whole: 100 MiB read with mirrord's peak RSS up by about 25 MiB),
// writes reach the target as they happen, and seek, pread, mmap, fstat,
// getdents and *at calls below a directory fd work with no interception
// at all: the kernel sends them to the view by itself. Names and
// attributes are cached for one second, and so is the target's open file
// behind read-only opens of one file: they share it, so a repeated
// open+close makes no request to the agent (see sharedFile).
//
// FUSE rather than memfd snapshots because a snapshot must be copied whole
// before the open returns and cannot carry writes back without also
// intercepting close. Where /dev/fuse cannot be opened (it is often mode
// 0600, root only) the fallback (memfd.go) serves read-only opens from a
// memfd snapshot (a pipe for files over 64 MiB), write-only opens through
// a pipe drained into the remote file, directories as snapshots of their
// entries, and fails read-write opens with EOPNOTSUPP (Files.Warn tells
// the user why, once).
//
// Traps. With SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, a received
// notification is not cancelled by the Go runtime's preemption signals;
// without it (before Linux 5.19) an interrupted call restarts and the
// ADDFD for it fails with ENOENT, which is ignored. Once the listener is
// closed every filtered call fails with ENOSYS, so the supervisor stops
// only in Close, after the program and its process group are gone.
// no_new_privs means setuid binaries run without their privilege. A
// remote chdir needs the view (EOPNOTSUPP without it: a snapshot
// directory would show empty local files) and a thread no debugger
// traces (EPERM: a thread has one tracer). Not intercepted: execve of
// remote files, and paths the rules map (mapping) to another local path:
// a local operation runs on the path as given.
package goshim
