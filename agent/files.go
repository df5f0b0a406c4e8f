package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/protocol"
	"github.com/mirrord-go/mirrord/relay"
)

// maxChunk bounds one read or write message: large files travel in
// pieces, never whole.
const maxChunk = 1 << 20

// rootFD opens the target's root directory. Every path is resolved below
// it with openat2(RESOLVE_IN_ROOT), so absolute symlinks in the container
// ("/etc/x -> /config/x") resolve inside the container, as they do for
// the target, and ".." cannot climb out.
func (t *target) rootFD() (int, error) {
	fd, err := unix.Open(t.root(), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open the target's root %s: %w", t.root(), err)
	}
	return fd, nil
}

// clean makes p relative to the root, as openat2 wants it.
func clean(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", unix.EINVAL
	}
	rel := strings.TrimPrefix(path.Clean(p), "/")
	if rel == "" {
		rel = "."
	}
	return rel, nil
}

func (t *target) openInRoot(p string, flags int, perm uint32) (int, error) {
	root, err := t.rootFD()
	if err != nil {
		return -1, err
	}
	defer unix.Close(root)
	rel, err := clean(p)
	if err != nil {
		return -1, err
	}
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(perm), Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	if flags&unix.O_CREAT == 0 && flags&unix.O_TMPFILE != unix.O_TMPFILE {
		how.Mode = 0
	}
	return unix.Openat2(root, rel, &how)
}

// parentInRoot opens the directory that holds p (for operations on the
// last path element itself: lstat, unlink, mkdir, rename, readlink).
func (t *target) parentInRoot(p string) (int, string, error) {
	rel, err := clean(p)
	if err != nil {
		return -1, "", err
	}
	if rel == "." {
		fd, err := t.openInRoot("/", unix.O_PATH|unix.O_DIRECTORY, 0)
		return fd, ".", err
	}
	dir, base := path.Split("/" + rel)
	fd, err := t.openInRoot(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	return fd, base, err
}

// statxMask is what the agent asks of the target's kernel: stat's fields
// and the birth time, where the file system keeps one.
const statxMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

// statAt describes name below dir (with AT_EMPTY_PATH and "", dir itself)
// with statx, or with fstatat where the kernel or a seccomp profile
// refuses statx (before Linux 4.11; older container runtimes said EPERM).
func statAt(dir int, name string, flags int) (*protocol.FileInfo, error) {
	var x unix.Statx_t
	err := unix.Statx(dir, name, flags|unix.AT_STATX_SYNC_AS_STAT, statxMask, &x)
	if err == nil {
		return statxInfo(&x), nil
	}
	if err != unix.ENOSYS && err != unix.EPERM {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, flags); err != nil {
		return nil, err
	}
	return statInfo(&st), nil
}

func statxInfo(x *unix.Statx_t) *protocol.FileInfo {
	ns := func(t unix.StatxTimestamp) int64 { return t.Sec*1e9 + int64(t.Nsec) }
	fi := &protocol.FileInfo{
		Mode: uint32(x.Mode), Size: int64(x.Size), Ino: x.Ino, Dev: unix.Mkdev(x.Dev_major, x.Dev_minor),
		Nlink: uint64(x.Nlink), UID: x.Uid, GID: x.Gid,
		Mtime: ns(x.Mtime), Atime: ns(x.Atime), Ctime: ns(x.Ctime),
		Mask: x.Mask, Blocks: int64(x.Blocks), Blksize: int64(x.Blksize), Rdev: unix.Mkdev(x.Rdev_major, x.Rdev_minor),
	}
	if x.Mask&unix.STATX_BTIME != 0 {
		fi.Btime = ns(x.Btime)
	}
	return fi
}

func statInfo(st *unix.Stat_t) *protocol.FileInfo {
	return &protocol.FileInfo{
		Mode: st.Mode, Size: st.Size, Ino: st.Ino, Dev: st.Dev, Nlink: uint64(st.Nlink), UID: st.Uid, GID: st.Gid,
		Mtime: st.Mtim.Nano(), Atime: st.Atim.Nano(), Ctime: st.Ctim.Nano(),
		Mask: unix.STATX_BASIC_STATS, Blocks: st.Blocks, Blksize: int64(st.Blksize), Rdev: st.Rdev,
	}
}

func fileError(err error) *protocol.ErrorReply {
	code := errorCode(err)
	if code == "" {
		code = "EIO"
	}
	return &protocol.ErrorReply{Message: err.Error(), Code: code}
}

// serveFile runs one file operation; for open, it then serves reads and
// writes on the stream until the client closes it.
func (a *Agent) serveFile(st *relay.Stream, req *protocol.FileRequest) {
	reply, fd, err := a.fileOp(req)
	if err != nil {
		protocol.Write(st, fileError(err))
		return
	}
	if err := protocol.Write(st, reply); err != nil || fd < 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return
	}
	f := os.NewFile(uintptr(fd), req.Path)
	defer f.Close()
	var buf []byte // grown to the largest read asked for: most opens read a little
	for {
		m, err := protocol.Read(st)
		if err != nil {
			return
		}
		switch m := m.(type) {
		case *protocol.FileRead:
			want := min(max(m.Len, 0), maxChunk)
			if len(buf) < want {
				buf = make([]byte, want)
			}
			n, err := f.ReadAt(buf[:want], m.Off)
			if err != nil && !errors.Is(err, io.EOF) {
				protocol.Write(st, fileError(err))
				continue
			}
			protocol.Write(st, &protocol.FileData{Data: buf[:n], EOF: errors.Is(err, io.EOF)})
		case *protocol.FileWrite:
			var n int
			var err error
			if req.Flags&unix.O_APPEND != 0 {
				n, err = f.Write(m.Data)
			} else {
				n, err = f.WriteAt(m.Data, m.Off)
			}
			if err != nil {
				protocol.Write(st, fileError(err))
				continue
			}
			protocol.Write(st, &protocol.FileData{N: n})
		default:
			protocol.Write(st, &protocol.ErrorReply{Message: fmt.Sprintf("unexpected %T on an open file", m), Code: "EINVAL"})
		}
	}
}

// fileOp performs req; for open it returns the open fd.
func (a *Agent) fileOp(req *protocol.FileRequest) (*protocol.FileReply, int, error) {
	t := a.target
	switch req.Op {
	case protocol.FileStat:
		var fi *protocol.FileInfo
		if req.Follow {
			fd, err := t.openInRoot(req.Path, unix.O_PATH, 0)
			if err != nil {
				return nil, -1, err
			}
			defer unix.Close(fd)
			fi, err = statAt(fd, "", unix.AT_EMPTY_PATH)
			if err != nil {
				return nil, -1, err
			}
		} else {
			dir, base, err := t.parentInRoot(req.Path)
			if err != nil {
				return nil, -1, err
			}
			defer unix.Close(dir)
			if fi, err = statAt(dir, base, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return nil, -1, err
			}
		}
		return &protocol.FileReply{Info: fi}, -1, nil
	case protocol.FileReadDir:
		fd, err := t.openInRoot(req.Path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return nil, -1, err
		}
		f := os.NewFile(uintptr(fd), req.Path)
		defer f.Close()
		names, err := f.Readdirnames(-1)
		if err != nil {
			return nil, -1, err
		}
		entries := make([]protocol.DirEntry, 0, len(names))
		for _, n := range names {
			var s unix.Stat_t
			e := protocol.DirEntry{Name: n}
			if unix.Fstatat(fd, n, &s, unix.AT_SYMLINK_NOFOLLOW) == nil {
				e.Mode, e.Ino, e.Dev = s.Mode&unix.S_IFMT, s.Ino, s.Dev
			}
			entries = append(entries, e)
		}
		return &protocol.FileReply{Entries: entries}, -1, nil
	case protocol.FileReadlink:
		dir, base, err := t.parentInRoot(req.Path)
		if err != nil {
			return nil, -1, err
		}
		defer unix.Close(dir)
		buf := make([]byte, unix.PathMax)
		n, err := unix.Readlinkat(dir, base, buf)
		if err != nil {
			return nil, -1, err
		}
		return &protocol.FileReply{Target: string(buf[:n])}, -1, nil
	case protocol.FileOpen:
		fd, err := t.openInRoot(req.Path, req.Flags&^unix.O_PATH, req.Perm)
		if err != nil {
			return nil, -1, err
		}
		fi, err := statAt(fd, "", unix.AT_EMPTY_PATH)
		if err != nil {
			unix.Close(fd)
			return nil, -1, err
		}
		return &protocol.FileReply{Info: fi}, fd, nil
	case protocol.FileUnlink:
		dir, base, err := t.parentInRoot(req.Path)
		if err != nil {
			return nil, -1, err
		}
		defer unix.Close(dir)
		flags := 0
		if req.Dir {
			flags = unix.AT_REMOVEDIR
		}
		// The parent was opened O_PATH; unlinkat needs a real dir fd.
		return &protocol.FileReply{}, -1, withDirFD(dir, func(d int) error { return unix.Unlinkat(d, base, flags) })
	case protocol.FileMkdir:
		dir, base, err := t.parentInRoot(req.Path)
		if err != nil {
			return nil, -1, err
		}
		defer unix.Close(dir)
		return &protocol.FileReply{}, -1, withDirFD(dir, func(d int) error { return unix.Mkdirat(d, base, req.Perm) })
	case protocol.FileRename:
		od, ob, err := t.parentInRoot(req.Path)
		if err != nil {
			return nil, -1, err
		}
		defer unix.Close(od)
		nd, nb, err := t.parentInRoot(req.NewPath)
		if err != nil {
			return nil, -1, err
		}
		defer unix.Close(nd)
		return &protocol.FileReply{}, -1, unix.Renameat(od, ob, nd, nb)
	case protocol.FileTruncate:
		if req.Size < 0 {
			return nil, -1, unix.EINVAL
		}
		fd, err := t.openInRoot(req.Path, unix.O_WRONLY, 0)
		if err != nil {
			return nil, -1, err
		}
		defer unix.Close(fd)
		return &protocol.FileReply{}, -1, unix.Ftruncate(fd, req.Size)
	case protocol.FileGetxattr, protocol.FileListxattr:
		return t.xattr(req)
	case protocol.FileSetattr:
		if req.Attr == nil {
			return nil, -1, unix.EINVAL
		}
		return &protocol.FileReply{}, -1, t.setattr(req.Path, req.Follow, req.Attr)
	case protocol.FileLink:
		od, ob, err := t.parentInRoot(req.Path)
		if err != nil {
			return nil, -1, err
		}
		defer unix.Close(od)
		nd, nb, err := t.parentInRoot(req.NewPath)
		if err != nil {
			return nil, -1, err
		}
		defer unix.Close(nd)
		return &protocol.FileReply{}, -1, unix.Linkat(od, ob, nd, nb, 0)
	case protocol.FileSymlink:
		nd, nb, err := t.parentInRoot(req.NewPath)
		if err != nil {
			return nil, -1, err
		}
		defer unix.Close(nd)
		return &protocol.FileReply{}, -1, unix.Symlinkat(req.LinkTarget, nd, nb)
	case protocol.FileAccess:
		return &protocol.FileReply{}, -1, t.access(req.Path, req.Follow, req.Perm)
	case protocol.FileStatfs:
		fd, err := t.openInRoot(req.Path, unix.O_PATH, 0)
		if err != nil {
			return nil, -1, err
		}
		defer unix.Close(fd)
		var s unix.Statfs_t
		if err := unix.Fstatfs(fd, &s); err != nil {
			return nil, -1, err
		}
		return &protocol.FileReply{Statfs: &protocol.StatfsInfo{
			Type: s.Type, Bsize: s.Bsize, Frsize: s.Frsize, Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail,
			Files: s.Files, Ffree: s.Ffree, Namelen: s.Namelen, Flags: s.Flags, Fsid: s.Fsid.Val,
		}}, -1, nil
	}
	return nil, -1, fmt.Errorf("unknown file operation %q", req.Op)
}

// setattr applies chmod, chown and utimensat to a path resolved in the
// target's root. Following: the file's O_PATH fd is named through
// /proc/self/fd (fchmod and futimens refuse O_PATH fds); not following:
// the parent directory's fd and the last element, with
// AT_SYMLINK_NOFOLLOW. Linux cannot chmod a symlink itself (EOPNOTSUPP),
// which the program then sees, as it would in the target.
func (t *target) setattr(p string, follow bool, a *protocol.SetAttr) error {
	var dir int
	var name string
	flags := 0
	if follow {
		fd, err := t.openInRoot(p, unix.O_PATH, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		dir, name = unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd)
	} else {
		fd, base, err := t.parentInRoot(p)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		dir, name, flags = fd, base, unix.AT_SYMLINK_NOFOLLOW
	}
	if a.Mode != nil {
		if err := unix.Fchmodat(dir, name, *a.Mode&0o7777, flags); err != nil {
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
		if err := unix.Fchownat(dir, name, uid, gid, flags); err != nil {
			return err
		}
	}
	if a.Atime != nil || a.Mtime != nil {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		for i, v := range []*int64{a.Atime, a.Mtime} {
			switch {
			case v == nil:
			case *v == protocol.TimeNow:
				ts[i] = unix.Timespec{Nsec: unix.UTIME_NOW}
			default:
				ts[i] = unix.NsecToTimespec(*v)
			}
		}
		if err := unix.UtimesNanoAt(dir, name, ts, flags); err != nil {
			return err
		}
	}
	return nil
}

// access checks p as access(2) does, for the agent itself: the one that
// opens the target's files for the program, so that access says yes
// exactly where the program's open would succeed (the agent runs as root
// in the target's container: read and write are refused only by a
// read-only mount, execute by a file without any execute bit). As for
// xattr, the path is resolved in the target's root and then named through
// /proc/self/fd.
func (t *target) access(p string, follow bool, mode uint32) error {
	if mode&^uint32(unix.R_OK|unix.W_OK|unix.X_OK) != 0 {
		return unix.EINVAL
	}
	var fd int
	var name string
	var err error
	flags := 0
	if follow {
		fd, err = t.openInRoot(p, unix.O_PATH, 0)
		name = fmt.Sprintf("/proc/self/fd/%d", fd)
	} else {
		var base string
		fd, base, err = t.parentInRoot(p)
		name = fmt.Sprintf("/proc/self/fd/%d/%s", fd, base)
		flags = unix.AT_SYMLINK_NOFOLLOW
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Faccessat(unix.AT_FDCWD, name, mode, flags)
}

// xattr reads or lists extended attributes. The path is resolved in the
// target's root first; the attribute calls then name it through
// /proc/self/fd, since an O_PATH fd cannot be given to fgetxattr. Without
// Follow the parent directory is opened and the last element named below
// it, so that lgetxattr looks at a final symlink itself.
func (t *target) xattr(req *protocol.FileRequest) (*protocol.FileReply, int, error) {
	var fd int
	var name string
	var err error
	if req.Follow {
		fd, err = t.openInRoot(req.Path, unix.O_PATH, 0)
		name = fmt.Sprintf("/proc/self/fd/%d", fd)
	} else {
		var base string
		fd, base, err = t.parentInRoot(req.Path)
		name = fmt.Sprintf("/proc/self/fd/%d/%s", fd, base)
	}
	if err != nil {
		return nil, -1, err
	}
	defer unix.Close(fd)
	// Following: the magic link itself is followed to the file. Not
	// following: only the directory's link is, the last element is not.
	// The size asked first, then read; a value that grew in between
	// (ERANGE) is asked again.
	read := func(buf []byte) (int, error) {
		switch {
		case req.Op == protocol.FileListxattr && req.Follow:
			return unix.Listxattr(name, buf)
		case req.Op == protocol.FileListxattr:
			return unix.Llistxattr(name, buf)
		case req.Follow:
			return unix.Getxattr(name, req.Name, buf)
		}
		return unix.Lgetxattr(name, req.Name, buf)
	}
	for range 3 {
		n, err := read(nil)
		if err != nil {
			return nil, -1, err
		}
		buf := make([]byte, n)
		n, err = read(buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, -1, err
		}
		if req.Op == protocol.FileGetxattr {
			return &protocol.FileReply{Value: buf[:n]}, -1, nil
		}
		names := []string{}
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		return &protocol.FileReply{Names: names}, -1, nil
	}
	return nil, -1, unix.ERANGE
}

// withDirFD reopens an O_PATH directory fd as a real one for fn.
func withDirFD(opath int, fn func(int) error) error {
	d, err := unix.Openat(opath, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(d)
	return fn(d)
}
