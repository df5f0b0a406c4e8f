package goshim

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/fsfilter"
	"github.com/mirrord-go/mirrord/protocol"
)

// modeFiles makes the test binary a static Go program that runs file
// operations given as arguments and prints one line per operation.
const modeFiles = "goshim-test-files"

// filesProgram runs ops like "read PATH", "write PATH TEXT", each as one
// argument, and prints "op: result" or "op: error ERRNO".
func filesProgram(ops []string) int {
	for _, op := range ops {
		f := strings.SplitN(op, " ", 3)
		res, err := fileOp(f)
		if err != nil {
			var errno syscall.Errno
			if e, ok := err.(*os.PathError); ok {
				err = e.Err
			}
			if e, ok := err.(*os.LinkError); ok {
				err = e.Err
			}
			if e, ok := err.(*os.SyscallError); ok {
				err = e.Err
			}
			if e, ok := err.(syscall.Errno); ok {
				errno = e
				res = "error " + unix.ErrnoName(errno)
			} else {
				res = "error " + err.Error()
			}
		}
		fmt.Printf("%s: %s\n", op, res)
	}
	return 0
}

func fileOp(f []string) (string, error) {
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	switch f[0] {
	case "read":
		b, err := os.ReadFile(arg(1))
		return string(b), err
	case "stat", "lstat":
		st := os.Stat
		if f[0] == "lstat" {
			st = os.Lstat
		}
		fi, err := st(arg(1))
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("size=%d dir=%t link=%t", fi.Size(), fi.IsDir(), fi.Mode()&os.ModeSymlink != 0), nil
	case "ls":
		es, err := os.ReadDir(arg(1))
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		slices.Sort(names)
		return strings.Join(names, ","), err
	case "readlink":
		return os.Readlink(arg(1))
	case "write":
		return "ok", os.WriteFile(arg(1), []byte(arg(2)), 0o644)
	case "append":
		f, err := os.OpenFile(arg(1), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return "", err
		}
		_, err = f.WriteString(arg(2))
		f.Close()
		return "ok", err
	case "mkdir":
		return "ok", os.Mkdir(arg(1), 0o755)
	case "rename":
		return "ok", os.Rename(arg(1), arg(2))
	case "rm":
		return "ok", os.Remove(arg(1))
	case "access":
		return "ok", unix.Access(arg(1), unix.R_OK)
	case "cd":
		return "ok", os.Chdir(arg(1))
	case "getcwd": // the system call ($PWD aside, as os.Getwd would use it)
		return syscall.Getwd()
	case "readat": // DIR NAME: open DIR, then NAME relative to it
		d, err := os.Open(arg(1))
		if err != nil {
			return "", err
		}
		defer d.Close()
		fd, err := unix.Openat(int(d.Fd()), arg(2), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", err
		}
		g := os.NewFile(uintptr(fd), arg(2))
		defer g.Close()
		b, err := io.ReadAll(g)
		return string(b), err
	case "sha":
		f, err := os.Open(arg(1))
		if err != nil {
			return "", err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return "", err
		}
		return hex.EncodeToString(h.Sum(nil)), nil
	}
	return "", fmt.Errorf("unknown op %q", f[0])
}

// dirFS is a FileSystem that serves a local directory as the target's
// root, standing in for the agent.
type dirFS struct{ root string }

func (d dirFS) real(p string) string { return filepath.Join(d.root, p) }

func infoOf(st *unix.Stat_t) *protocol.FileInfo {
	return &protocol.FileInfo{Mode: st.Mode, Size: st.Size, Ino: st.Ino, Dev: st.Dev, Nlink: uint64(st.Nlink),
		UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Nano(), Atime: st.Atim.Nano(), Ctime: st.Ctim.Nano()}
}

func (d dirFS) Stat(_ context.Context, p string, follow bool) (*protocol.FileInfo, error) {
	var st unix.Stat_t
	var err error
	if follow {
		err = unix.Stat(d.real(p), &st)
	} else {
		err = unix.Lstat(d.real(p), &st)
	}
	if err != nil {
		return nil, err
	}
	return infoOf(&st), nil
}

func (d dirFS) ReadDir(_ context.Context, p string) ([]protocol.DirEntry, error) {
	es, err := os.ReadDir(d.real(p))
	if err != nil {
		return nil, errnoErr(err)
	}
	var out []protocol.DirEntry
	for _, e := range es {
		var st unix.Stat_t
		unix.Lstat(filepath.Join(d.real(p), e.Name()), &st)
		out = append(out, protocol.DirEntry{Name: e.Name(), Mode: st.Mode & unix.S_IFMT, Ino: st.Ino, Dev: st.Dev})
	}
	return out, nil
}

func errnoErr(err error) error {
	var errno syscall.Errno
	if pe, ok := err.(*os.PathError); ok {
		if e, ok := pe.Err.(syscall.Errno); ok {
			errno = e
		}
	}
	if errno == 0 {
		return err
	}
	return errno
}

func (d dirFS) Readlink(_ context.Context, p string) (string, error) {
	s, err := os.Readlink(d.real(p))
	return s, errnoErr(err)
}

func (d dirFS) Open(_ context.Context, p string, flags int, perm uint32) (RemoteFile, error) {
	f, err := os.OpenFile(d.real(p), flags, os.FileMode(perm))
	if err != nil {
		return nil, errnoErr(err)
	}
	return appendFile{f, flags&os.O_APPEND != 0}, nil
}

type appendFile struct {
	*os.File
	append bool
}

func (f appendFile) WriteAt(b []byte, off int64) (int, error) {
	if f.append {
		return f.Write(b)
	}
	return f.File.WriteAt(b, off)
}

func (d dirFS) Unlink(_ context.Context, p string, dir bool) error {
	if dir {
		return unix.Rmdir(d.real(p))
	}
	return unix.Unlink(d.real(p))
}

func (d dirFS) Mkdir(_ context.Context, p string, perm uint32) error {
	return unix.Mkdir(d.real(p), perm)
}

func (d dirFS) Rename(_ context.Context, from, to string) error {
	return unix.Rename(d.real(from), d.real(to))
}

func (d dirFS) Truncate(_ context.Context, p string, size int64) error {
	return unix.Truncate(d.real(p), size)
}

func (d dirFS) Getxattr(_ context.Context, p, name string, follow bool) ([]byte, error) {
	get := unix.Lgetxattr
	if follow {
		get = unix.Getxattr
	}
	buf := make([]byte, 64<<10)
	n, err := get(d.real(p), name, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func (d dirFS) Listxattr(_ context.Context, p string, follow bool) ([]string, error) {
	list := unix.Llistxattr
	if follow {
		list = unix.Listxattr
	}
	buf := make([]byte, 64<<10)
	n, err := list(d.real(p), buf)
	if err != nil {
		return nil, err
	}
	return strings.FieldsFunc(string(buf[:n]), func(r rune) bool { return r == 0 }), nil
}

func (d dirFS) Statfs(_ context.Context, p string) (*protocol.StatfsInfo, error) {
	var s unix.Statfs_t
	if err := unix.Statfs(d.real(p), &s); err != nil {
		return nil, err
	}
	return &protocol.StatfsInfo{Type: s.Type, Bsize: s.Bsize, Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail,
		Files: s.Files, Ffree: s.Ffree, Namelen: s.Namelen, Frsize: s.Frsize, Flags: s.Flags, Fsid: s.Fsid.Val}, nil
}

func (d dirFS) Access(_ context.Context, p string, mode uint32, follow bool) error {
	flags := 0
	if !follow {
		flags = unix.AT_SYMLINK_NOFOLLOW
	}
	return unix.Faccessat(unix.AT_FDCWD, d.real(p), mode, flags)
}

func (d dirFS) Setattr(_ context.Context, p string, follow bool, a protocol.SetAttr) error {
	flags := 0
	if !follow {
		flags = unix.AT_SYMLINK_NOFOLLOW
	}
	if a.Mode != nil {
		if err := unix.Fchmodat(unix.AT_FDCWD, d.real(p), *a.Mode, 0); err != nil {
			return err
		}
	}
	if a.UID != nil || a.GID != nil {
		uid, gid := -1, -1
		if a.UID != nil {
			uid = int(*a.UID)
		}
		if a.GID != nil {
			gid = int(*a.GID)
		}
		if err := unix.Fchownat(unix.AT_FDCWD, d.real(p), uid, gid, flags); err != nil {
			return err
		}
	}
	if a.Atime != nil || a.Mtime != nil {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		for i, v := range []*int64{a.Atime, a.Mtime} {
			if v != nil {
				ts[i] = unix.NsecToTimespec(*v)
				if *v == protocol.TimeNow {
					ts[i] = unix.Timespec{Nsec: unix.UTIME_NOW}
				}
			}
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, d.real(p), ts, flags)
	}
	return nil
}

func (d dirFS) Link(_ context.Context, from, to string) error {
	return unix.Link(d.real(from), d.real(to))
}

func (d dirFS) Symlink(_ context.Context, target, link string) error {
	return unix.Symlink(target, d.real(link))
}

// prefixFilter: /mirrord-test-remote is the target's, /mirrord-test-missing
// is not_found, the rest is local.
type prefixFilter struct{}

func (prefixFilter) Classify(p string, write bool) (fsfilter.Action, string) {
	switch {
	case strings.HasPrefix(p, "/mirrord-test-remote"):
		return fsfilter.Remote, p
	case strings.HasPrefix(p, "/mirrord-test-missing"):
		return fsfilter.NotFound, p
	}
	return fsfilter.Local, p
}

func TestFiles(t *testing.T) {
	for _, noFUSE := range []bool{false, true} {
		name := "fuse view"
		if noFUSE {
			name = "memfd fallback"
		}
		t.Run(name, func(t *testing.T) { testFiles(t, noFUSE) })
	}
}

func testFiles(t *testing.T, noFUSE bool) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	remote := filepath.Join(root, "mirrord-test-remote")
	os.MkdirAll(filepath.Join(remote, "sub"), 0o755)
	os.WriteFile(filepath.Join(remote, "config.yaml"), []byte("remote: yes\n"), 0o644)
	os.Symlink("config.yaml", filepath.Join(remote, "link"))
	os.WriteFile(filepath.Join(remote, "old.txt"), []byte("old"), 0o644)
	big := make([]byte, 3<<20+17)
	rand.Read(big)
	os.WriteFile(filepath.Join(remote, "big"), big, 0o644)
	bigSum := sha256.Sum256(big)
	local := filepath.Join(t.TempDir(), "local.txt")
	os.WriteFile(local, []byte("local file"), 0o644)

	r := "/mirrord-test-remote"
	ops := []string{
		"read " + r + "/config.yaml",
		"stat " + r + "/config.yaml",
		"lstat " + r + "/link",
		"readlink " + r + "/link",
		"read " + r + "/link",
		"ls " + r,
		"stat " + r + "/sub",
		"access " + r + "/config.yaml",
		"cd " + r,
		"getcwd",
		"read config.yaml",
		"cd sub",
		"getcwd",
		"cd /",
		"readat " + r + " config.yaml",
		"read /mirrord-test-missing/x",
		"read " + local,
		"read " + r + "/nope",
		"sha " + r + "/big",
		"write " + r + "/new.txt hello remote",
		"append " + r + "/new.txt , more",
		"mkdir " + r + "/newdir",
		"rename " + r + "/old.txt " + r + "/newdir/moved.txt",
		"rm " + r + "/sub",
		"rename " + r + "/config.yaml " + local + ".moved",
	}
	want := []string{
		"remote: yes\n",
		"size=12 dir=false link=false",
		"size=11 dir=false link=true",
		"config.yaml",
		"remote: yes\n",
		"big,config.yaml,link,old.txt,sub",
		"size=" + fmt.Sprint(statSize(t, filepath.Join(remote, "sub"))) + " dir=true link=false",
		"ok",
	}
	// chdir into a remote directory needs the view: without it, a clear
	// error rather than a local directory.
	if noFUSE {
		cwd, _ := os.Getwd()
		want = append(want, "error ENOTSUP", cwd, "error ENOENT", "error ENOENT", cwd, "ok")
	} else {
		want = append(want, "ok", r, "remote: yes\n", "ok", r+"/sub", "ok")
	}
	want = append(want,
		"remote: yes\n",
		"error ENOENT",
		"local file",
		"error ENOENT",
		hex.EncodeToString(bigSum[:]),
		"ok",
		"ok",
		"ok",
		"ok",
		"ok",
		"error EXDEV",
	)
	goroutines := runtime.NumGoroutine()
	spec := Spec{Path: exe, Args: append([]string{exe, modeFiles}, ops...)}
	var out, errOut bytes.Buffer
	s := startSandbox(t, spec, WithStdio(nil, &out, &errOut), WithFiles(Files{
		FS: dirFS{root: root}, Filter: prefixFilter{}, RemoteWrites: true, NoFUSE: noFUSE,
	}))
	_, view := s.remote.(*fuseView)
	t.Logf("FUSE view: %t", view)
	if !noFUSE && !view && unix.Access("/dev/fuse", unix.R_OK|unix.W_OK) == nil {
		t.Error("/dev/fuse is accessible, yet the FUSE view was not used")
	}
	if err := s.Go(); err != nil {
		t.Fatalf("Go: %v", err)
	}
	code, _ := s.Wait()
	if code != 0 {
		t.Fatalf("exit code %d\n%s\n%s", code, out.String(), errOut.String())
	}
	s.Close()
	// The supervisor, the FUSE server and the pipe pumps are gone.
	for deadline := time.Now().Add(3 * time.Second); runtime.NumGoroutine() > goroutines; {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), goroutines, buf[:runtime.Stack(buf, true)])
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := parseOpLines(out.String(), ops)
	for i, op := range ops {
		if got[i] != want[i] {
			t.Errorf("%s: got %q, want %q", op, got[i], want[i])
		}
	}
	if b, err := os.ReadFile(filepath.Join(remote, "new.txt")); string(b) != "hello remote, more" {
		t.Errorf("written remote file: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(remote, "newdir", "moved.txt")); err != nil {
		t.Errorf("renamed remote file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(remote, "sub")); !os.IsNotExist(err) {
		t.Errorf("removed remote directory still there: %v", err)
	}
	if _, err := os.Stat("/mirrord-test-remote"); !os.IsNotExist(err) {
		t.Errorf("a remote path leaked onto this machine: %v", err)
	}
}

func statSize(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// parseOpLines splits the program's output into one result per op (a
// result may span lines).
func parseOpLines(out string, ops []string) []string {
	res := make([]string, len(ops))
	rest := out
	for i, op := range ops {
		prefix := op + ": "
		j := strings.Index(rest, prefix)
		if j < 0 {
			res[i] = "(missing)"
			continue
		}
		rest = rest[j+len(prefix):]
		end := len(rest)
		if i+1 < len(ops) {
			if k := strings.Index(rest, "\n"+ops[i+1]+": "); k >= 0 {
				end = k
			}
		} else {
			end = len(strings.TrimSuffix(rest, "\n"))
		}
		res[i] = rest[:end]
		rest = rest[end:]
	}
	return res
}

// TestFileNoPoll: the wrapped fd keeps its O_NONBLOCK (the program's
// flag), also after Fd, and the file works as a blocking one.
func TestFileNoPoll(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	f := fileNoPoll(p[0], "pipe")
	defer f.Close()
	for _, when := range []string{"wrapped", "after Fd"} {
		if when == "after Fd" {
			f.Fd()
		}
		fl, err := unix.FcntlInt(uintptr(p[0]), unix.F_GETFL, 0)
		if err != nil || fl&unix.O_NONBLOCK == 0 {
			t.Errorf("%s: flags %#x, %v: O_NONBLOCK lost", when, fl, err)
		}
	}
	unix.Write(p[1], []byte("x"))
	b := make([]byte, 1)
	if n, err := f.Read(b); n != 1 || err != nil {
		t.Errorf("read: %d, %v", n, err)
	}
}
