package goshim

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestAuditArch: the seccomp filter only sees the calls of the ABI it
// names (buildFilter allows every other), so a wrong auditArch would let
// every file and socket call of the program through unnoticed. The test
// binary's own ELF header says which ABI it runs with (under qemu-user
// too: qemu shows the emulated binary as /proc/self/exe).
func TestAuditArch(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[elf.Machine]uint32{elf.EM_X86_64: unix.AUDIT_ARCH_X86_64, elf.EM_AARCH64: unix.AUDIT_ARCH_AARCH64}[f.Machine]
	if auditArch != want {
		t.Errorf("auditArch %#x for a %v binary, want %#x", auditArch, f.Machine, want)
	}
}

// probeEnv is a directory for one probe: f (a file holding "hello"), d
// (an empty directory), l (a symlink to f) and dangling (a symlink to
// nothing).
type probeEnv struct {
	t    *testing.T
	dir  string
	keep [][]byte // what raw arguments point to, alive until the probe ends
}

func (e *probeEnv) path(name string) string { return filepath.Join(e.dir, name) }

// str is a C string argument for a file in the directory (or, with a
// leading "=", the string itself).
func (e *probeEnv) str(name string) uintptr {
	s := e.path(name)
	if name != "" && name[0] == '=' {
		s = name[1:]
	}
	b := append([]byte(s), 0)
	e.keep = append(e.keep, b)
	return uintptr(unsafe.Pointer(&b[0]))
}

// buf is an output argument of n bytes.
func (e *probeEnv) buf(n int) ([]byte, uintptr) {
	b := make([]byte, n)
	e.keep = append(e.keep, b)
	return b, uintptr(unsafe.Pointer(&b[0]))
}

// call makes the system call nr with raw arguments.
func call(nr int, a ...uintptr) (uintptr, error) {
	var x [6]uintptr
	copy(x[:], a)
	r, _, errno := unix.Syscall6(uintptr(nr), x[0], x[1], x[2], x[3], x[4], x[5])
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

func (e *probeEnv) readFD(fd uintptr) string {
	defer unix.Close(int(fd))
	b := make([]byte, 16)
	n, err := unix.Read(int(fd), b)
	if err != nil {
		return err.Error()
	}
	return string(b[:n])
}

func (e *probeEnv) lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Lstat(e.path(name), &st)
	return st, err
}

func (e *probeEnv) exists(name string) bool { _, err := e.lstat(name); return err == nil }

// checks are the usual results of a probe.
func want(ok bool, format string, a ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf(format, a...)
}

func (e *probeEnv) opened(fd uintptr, err error) error {
	if err != nil {
		return err
	}
	return want(e.readFD(fd) == "hello", "the fd does not read f")
}

func (e *probeEnv) size(st unix.Stat_t, err error) error {
	if err != nil {
		return err
	}
	return want(st.Size == 5 && st.Mode&unix.S_IFMT == unix.S_IFREG, "stat of f: mode %o size %d", st.Mode, st.Size)
}

func (e *probeEnv) access(nr int, args func(path uintptr) []uintptr) error {
	if _, err := call(nr, args(e.str("f"))...); err != nil {
		return err
	}
	_, err := call(nr, args(e.str("missing"))...)
	return want(errors.Is(err, unix.ENOENT), "missing file: %v, want ENOENT", err)
}

func (e *probeEnv) readlink(nr int, args func(path, buf uintptr) []uintptr) error {
	b, p := e.buf(64)
	n, err := call(nr, args(e.str("l"), p)...)
	if err != nil {
		return err
	}
	return want(string(b[:n]) == e.path("f"), "read %q", b[:n])
}

func (e *probeEnv) gone(name string) func(uintptr, error) error {
	return func(_ uintptr, err error) error {
		if err != nil {
			return err
		}
		return want(!e.exists(name), "%s still exists", name)
	}
}

func (e *probeEnv) isDir(name string) func(uintptr, error) error {
	return func(_ uintptr, err error) error {
		if err != nil {
			return err
		}
		st, err := e.lstat(name)
		return want(err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR, "%s is not a directory: %v", name, err)
	}
}

func (e *probeEnv) renamed(_ uintptr, err error) error {
	if err != nil {
		return err
	}
	return want(!e.exists("f") && e.exists("g"), "f was not renamed to g")
}

func (e *probeEnv) mode(_ uintptr, err error) error {
	if err != nil {
		return err
	}
	st, err := e.lstat("f")
	return want(err == nil && st.Mode&0o7777 == 0o600, "f's mode %o, want 600", st.Mode&0o7777)
}

// owner is the uid and gid the chown probes give: another one as root, this
// process's own otherwise (which only checks that the call succeeds).
func owner() (int, int) {
	if os.Geteuid() == 0 {
		return 4321, 4322
	}
	return os.Geteuid(), os.Getegid()
}

func (e *probeEnv) owned(name string) func(uintptr, error) error {
	return func(_ uintptr, err error) error {
		if err != nil {
			return err
		}
		uid, gid := owner()
		st, err := e.lstat(name)
		return want(err == nil && int(st.Uid) == uid && int(st.Gid) == gid, "%s is owned by %d:%d, want %d:%d", name, st.Uid, st.Gid, uid, gid)
	}
}

// times checks that f's atime is 1e9 and its mtime 2e9.
func (e *probeEnv) times(_ uintptr, err error) error {
	if err != nil {
		return err
	}
	st, err := e.lstat("f")
	return want(err == nil && st.Atim.Sec == 1e9 && st.Mtim.Sec == 2e9, "f's times %d %d, want 1e9 2e9 (%v)", st.Atim.Sec, st.Mtim.Sec, err)
}

func (e *probeEnv) linked(_ uintptr, err error) error {
	if err != nil {
		return err
	}
	st, err := e.lstat("h")
	return want(err == nil && st.Nlink == 2 && st.Size == 5, "h: %v, nlink %d", err, st.Nlink)
}

func (e *probeEnv) symlinked(_ uintptr, err error) error {
	if err != nil {
		return err
	}
	target, err := os.Readlink(e.path("s"))
	return want(err == nil && target == "f", "s points to %q (%v)", target, err)
}

// xattr: the plain forms follow the dangling symlink (ENOENT), the l
// forms look at the link itself.
func (e *probeEnv) xattr(nr int, follow bool, args func(path uintptr) []uintptr) error {
	_, err := call(nr, args(e.str("dangling"))...)
	if follow {
		return want(errors.Is(err, unix.ENOENT), "dangling symlink: %v, want ENOENT", err)
	}
	return want(!errors.Is(err, unix.ENOENT), "dangling symlink: ENOENT, so the call followed it")
}

// tcpPair is a listening socket with one pending connection.
func tcpPair(t *testing.T) (ln *net.TCPListener, lfd int, client net.Conn) {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	client, err = net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	fd := int(f.Fd())
	unix.SetNonblock(fd, false)
	return ln, fd, client
}

func inet4(port int) (unix.RawSockaddrInet4, uintptr) {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port)
	return sa, unsafe.Sizeof(sa)
}

// probes make each intercepted call by its number, with the arguments of
// its own form, and check that it did what its name says: a number that
// belongs to another call (or to another architecture) fails here.
var probes = map[string]func(e *probeEnv, nr int) error{
	"open": func(e *probeEnv, nr int) error { return e.opened(call(nr, e.str("f"), unix.O_RDONLY)) },
	"openat": func(e *probeEnv, nr int) error {
		return e.opened(call(nr, uintptr(atFDCWD), e.str("f"), unix.O_RDONLY))
	},
	"openat2": func(e *probeEnv, nr int) error {
		how := unix.OpenHow{Flags: unix.O_RDONLY}
		return e.opened(call(nr, uintptr(atFDCWD), e.str("f"), uintptr(unsafe.Pointer(&how)), unsafe.Sizeof(how)))
	},
	"newfstatat": func(e *probeEnv, nr int) error {
		var st unix.Stat_t
		_, err := call(nr, uintptr(atFDCWD), e.str("l"), uintptr(unsafe.Pointer(&st)), 0)
		return e.size(st, err)
	},
	"stat": func(e *probeEnv, nr int) error {
		var st unix.Stat_t
		_, err := call(nr, e.str("l"), uintptr(unsafe.Pointer(&st)))
		return e.size(st, err)
	},
	"lstat": func(e *probeEnv, nr int) error {
		var st unix.Stat_t
		if _, err := call(nr, e.str("l"), uintptr(unsafe.Pointer(&st))); err != nil {
			return err
		}
		return want(st.Mode&unix.S_IFMT == unix.S_IFLNK, "lstat of l: mode %o, not a symlink", st.Mode)
	},
	"statx": func(e *probeEnv, nr int) error {
		var stx unix.Statx_t
		if _, err := call(nr, uintptr(atFDCWD), e.str("l"), 0, unix.STATX_SIZE|unix.STATX_TYPE, uintptr(unsafe.Pointer(&stx))); err != nil {
			return err
		}
		return want(stx.Size == 5 && stx.Mode&unix.S_IFMT == unix.S_IFREG, "statx of l: mode %o size %d", stx.Mode, stx.Size)
	},
	"access": func(e *probeEnv, nr int) error {
		return e.access(nr, func(p uintptr) []uintptr { return []uintptr{p, unix.R_OK} })
	},
	"faccessat": func(e *probeEnv, nr int) error {
		return e.access(nr, func(p uintptr) []uintptr { return []uintptr{uintptr(atFDCWD), p, unix.R_OK} })
	},
	"faccessat2": func(e *probeEnv, nr int) error {
		return e.access(nr, func(p uintptr) []uintptr { return []uintptr{uintptr(atFDCWD), p, unix.R_OK, 0} })
	},
	"readlink": func(e *probeEnv, nr int) error {
		return e.readlink(nr, func(p, b uintptr) []uintptr { return []uintptr{p, b, 64} })
	},
	"readlinkat": func(e *probeEnv, nr int) error {
		return e.readlink(nr, func(p, b uintptr) []uintptr { return []uintptr{uintptr(atFDCWD), p, b, 64} })
	},
	"unlink": func(e *probeEnv, nr int) error { return e.gone("f")(call(nr, e.str("f"))) },
	"unlinkat": func(e *probeEnv, nr int) error {
		return e.gone("d")(call(nr, uintptr(atFDCWD), e.str("d"), unix.AT_REMOVEDIR))
	},
	"rmdir": func(e *probeEnv, nr int) error { return e.gone("d")(call(nr, e.str("d"))) },
	"mkdir": func(e *probeEnv, nr int) error { return e.isDir("new")(call(nr, e.str("new"), 0o755)) },
	"mkdirat": func(e *probeEnv, nr int) error {
		return e.isDir("new")(call(nr, uintptr(atFDCWD), e.str("new"), 0o755))
	},
	"rename": func(e *probeEnv, nr int) error { return e.renamed(call(nr, e.str("f"), e.str("g"))) },
	"renameat": func(e *probeEnv, nr int) error {
		return e.renamed(call(nr, uintptr(atFDCWD), e.str("f"), uintptr(atFDCWD), e.str("g")))
	},
	"renameat2": func(e *probeEnv, nr int) error {
		return e.renamed(call(nr, uintptr(atFDCWD), e.str("f"), uintptr(atFDCWD), e.str("g"), 0))
	},
	"chmod":     func(e *probeEnv, nr int) error { return e.mode(call(nr, e.str("l"), 0o600)) },
	"fchmodat":  func(e *probeEnv, nr int) error { return e.mode(call(nr, uintptr(atFDCWD), e.str("l"), 0o600)) },
	"fchmodat2": func(e *probeEnv, nr int) error { return e.mode(call(nr, uintptr(atFDCWD), e.str("l"), 0o600, 0)) },
	"chown": func(e *probeEnv, nr int) error {
		uid, gid := owner()
		return e.owned("f")(call(nr, e.str("l"), uintptr(uid), uintptr(gid)))
	},
	"lchown": func(e *probeEnv, nr int) error {
		uid, gid := owner()
		return e.owned("l")(call(nr, e.str("l"), uintptr(uid), uintptr(gid)))
	},
	"fchownat": func(e *probeEnv, nr int) error {
		uid, gid := owner()
		return e.owned("l")(call(nr, uintptr(atFDCWD), e.str("l"), uintptr(uid), uintptr(gid), unix.AT_SYMLINK_NOFOLLOW))
	},
	"utimensat": func(e *probeEnv, nr int) error {
		ts := [2]unix.Timespec{{Sec: 1e9}, {Sec: 1e9}}
		if _, err := call(nr, uintptr(atFDCWD), e.str("f"), uintptr(unsafe.Pointer(&ts)), 0); err != nil {
			return err
		}
		st, err := e.lstat("f")
		return want(err == nil && st.Mtim.Sec == 1e9, "f's mtime %d, want 1e9", st.Mtim.Sec)
	},
	"utime": func(e *probeEnv, nr int) error {
		buf := [2]int64{1e9, 2e9} // struct utimbuf: actime, modtime
		return e.times(call(nr, e.str("f"), uintptr(unsafe.Pointer(&buf))))
	},
	"utimes": func(e *probeEnv, nr int) error {
		tv := [2]unix.Timeval{{Sec: 1e9}, {Sec: 2e9}}
		return e.times(call(nr, e.str("f"), uintptr(unsafe.Pointer(&tv))))
	},
	"futimesat": func(e *probeEnv, nr int) error {
		tv := [2]unix.Timeval{{Sec: 1e9}, {Sec: 2e9}}
		return e.times(call(nr, uintptr(atFDCWD), e.str("f"), uintptr(unsafe.Pointer(&tv))))
	},
	"chdir": func(e *probeEnv, nr int) error {
		old, err := os.Getwd()
		if err != nil {
			return err
		}
		defer os.Chdir(old)
		if _, err := call(nr, e.str("d")); err != nil {
			return err
		}
		cwd, err := os.Readlink("/proc/self/cwd") // the process's: one thread's chdir is all threads'
		return want(err == nil && cwd == e.path("d"), "cwd after chdir: %q %v", cwd, err)
	},
	"getcwd": func(e *probeEnv, nr int) error {
		b, p := e.buf(4096)
		n, err := call(nr, p, 4096)
		cwd, _ := os.Readlink("/proc/self/cwd")
		return want(err == nil && string(b[:n]) == cwd+"\x00", "getcwd: %q, want %q (%v)", b[:n], cwd, err)
	},
	"link": func(e *probeEnv, nr int) error { return e.linked(call(nr, e.str("f"), e.str("h"))) },
	"linkat": func(e *probeEnv, nr int) error {
		return e.linked(call(nr, uintptr(atFDCWD), e.str("f"), uintptr(atFDCWD), e.str("h"), 0))
	},
	"symlink": func(e *probeEnv, nr int) error { return e.symlinked(call(nr, e.str("=f"), e.str("s"))) },
	"symlinkat": func(e *probeEnv, nr int) error {
		return e.symlinked(call(nr, e.str("=f"), uintptr(atFDCWD), e.str("s")))
	},
	"getxattr": func(e *probeEnv, nr int) error {
		_, b := e.buf(64)
		return e.xattr(nr, true, func(p uintptr) []uintptr { return []uintptr{p, e.str("=user.none"), b, 64} })
	},
	"lgetxattr": func(e *probeEnv, nr int) error {
		_, b := e.buf(64)
		return e.xattr(nr, false, func(p uintptr) []uintptr { return []uintptr{p, e.str("=user.none"), b, 64} })
	},
	"listxattr": func(e *probeEnv, nr int) error {
		_, b := e.buf(64)
		return e.xattr(nr, true, func(p uintptr) []uintptr { return []uintptr{p, b, 64} })
	},
	"llistxattr": func(e *probeEnv, nr int) error {
		_, b := e.buf(64)
		return e.xattr(nr, false, func(p uintptr) []uintptr { return []uintptr{p, b, 64} })
	},
	"statfs": func(e *probeEnv, nr int) error {
		var got, ref unix.Statfs_t
		if _, err := call(nr, e.str("d"), uintptr(unsafe.Pointer(&got))); err != nil {
			return err
		}
		if err := unix.Statfs(e.dir, &ref); err != nil {
			return err
		}
		return want(got.Type == ref.Type && got.Bsize == ref.Bsize && got.Bsize > 0, "statfs: type %#x bsize %d, want %#x %d", got.Type, got.Bsize, ref.Type, ref.Bsize)
	},
	"truncate": func(e *probeEnv, nr int) error {
		if _, err := call(nr, e.str("f"), 2); err != nil {
			return err
		}
		st, err := e.lstat("f")
		return want(err == nil && st.Size == 2, "f's size %d, want 2", st.Size)
	},
	"bind": func(e *probeEnv, nr int) error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := unix.RawSockaddrUnix{Family: unix.AF_UNIX}
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&sa.Path[0])), len(sa.Path)), e.path("sock"))
		if _, err := call(nr, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa)); err != nil {
			return err
		}
		st, err := e.lstat("sock")
		return want(err == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK, "no socket file after bind: %v", err)
	},
	"listen": func(e *probeEnv, nr int) error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		if _, err := call(nr, uintptr(fd), 1); err != nil {
			return err
		}
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		return want(err == nil && v == 1, "not listening after listen: %d %v", v, err)
	},
	"connect": func(e *probeEnv, nr int) error {
		ln, _, _ := tcpPair(e.t)
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa, n := inet4(ln.Addr().(*net.TCPAddr).Port)
		if _, err := call(nr, uintptr(fd), uintptr(unsafe.Pointer(&sa)), n); err != nil {
			return err
		}
		peer, err := unix.Getpeername(fd)
		return want(err == nil && peer.(*unix.SockaddrInet4).Port == ln.Addr().(*net.TCPAddr).Port, "peer after connect: %v %v", peer, err)
	},
	"sendto": func(e *probeEnv, nr int) error {
		srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		defer srv.Close()
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa, n := inet4(srv.LocalAddr().(*net.UDPAddr).Port)
		msg := []byte("probe")
		if _, err := call(nr, uintptr(fd), uintptr(unsafe.Pointer(&msg[0])), uintptr(len(msg)), 0, uintptr(unsafe.Pointer(&sa)), n); err != nil {
			return err
		}
		b := make([]byte, 16)
		got, _, err := srv.ReadFromUDP(b)
		return want(err == nil && bytes.Equal(b[:got], msg), "received %q, %v", b[:got], err)
	},
	"accept": func(e *probeEnv, nr int) error {
		_, lfd, _ := tcpPair(e.t)
		fd, err := call(nr, uintptr(lfd), 0, 0)
		if err != nil {
			return err
		}
		defer unix.Close(int(fd))
		_, err = unix.Getpeername(int(fd))
		return err
	},
	"accept4": func(e *probeEnv, nr int) error {
		_, lfd, _ := tcpPair(e.t)
		fd, err := call(nr, uintptr(lfd), 0, 0, unix.SOCK_CLOEXEC)
		if err != nil {
			return err
		}
		defer unix.Close(int(fd))
		flags, err := unix.FcntlInt(fd, unix.F_GETFD, 0)
		return want(err == nil && flags&unix.FD_CLOEXEC != 0, "accept4 with SOCK_CLOEXEC: fd flags %d %v", flags, err)
	},
	"getpeername": func(e *probeEnv, nr int) error {
		ln, _, client := tcpPair(e.t)
		f, err := client.(*net.TCPConn).File()
		if err != nil {
			return err
		}
		defer f.Close()
		var sa unix.RawSockaddrInet4
		n := uint32(unsafe.Sizeof(sa))
		if _, err := call(nr, f.Fd(), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&n))); err != nil {
			return err
		}
		want4, _ := inet4(ln.Addr().(*net.TCPAddr).Port)
		return want(sa.Port == want4.Port && sa.Addr == want4.Addr, "getpeername: %v", sa)
	},
}

// newer are the calls younger than the kernels and emulators the tests
// may run on (qemu-user 7.2 knows none of them): ENOSYS is no failure.
var newer = []string{"openat2", "faccessat2", "fchmodat2"}

// TestSyscallTables makes every intercepted call of this architecture
// by its number (`make unit-arm64` runs it for arm64 under qemu-user):
// the tables are right if each number does what its name says.
func TestSyscallTables(t *testing.T) {
	all := interceptedSyscalls(true, true, true, true)
	names := map[string]int{}
	for nr, c := range all {
		if other, dup := names[c.name]; dup {
			t.Errorf("%s is both %d and %d", c.name, other, nr)
		}
		names[c.name] = nr
	}
	for _, name := range slices.Sorted(maps.Keys(names)) {
		nr := names[name]
		t.Run(name, func(t *testing.T) {
			probe, ok := probes[name]
			if !ok {
				t.Fatalf("no probe for %s (%d): add one", name, nr)
			}
			e := &probeEnv{t: t, dir: t.TempDir()}
			for _, err := range []error{
				os.WriteFile(e.path("f"), []byte("hello"), 0o644),
				os.Mkdir(e.path("d"), 0o755),
				os.Symlink(e.path("f"), e.path("l")),
				os.Symlink(e.path("missing"), e.path("dangling")),
			} {
				if err != nil {
					t.Fatal(err)
				}
			}
			err := probe(e, nr)
			if errors.Is(err, unix.ENOSYS) && slices.Contains(newer, name) {
				t.Skipf("%s (%d): ENOSYS: this kernel or emulator does not have it", name, nr)
			}
			if err != nil {
				t.Errorf("%s (%d): %v", name, nr, err)
			}
		})
	}
}
