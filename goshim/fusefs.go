package goshim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/protocol"
)

// The FUSE view: the target's whole file system as a FUSE file system
// served by mirrord from FileSystem. The helper creates it inside the
// sandbox's user namespace with the new mount API (fsopen/fsmount), so it
// is never attached anywhere: the program cannot see it in its mount
// table, and mirrord reaches it only through the root fd the helper hands
// over. Files opened in it are real kernel files: reads page in through
// the kernel's cache in 1 MiB requests (a large file is never held whole
// by mirrord), writes reach the target as they happen, and seek, pread,
// mmap, fstat, getdents and *at calls below a directory fd all work with
// no further interception.

// viewTimeout is how long the kernel caches names and attributes of the
// view: the target may change its files under us.
const viewTimeout = time.Second

// opTimeout bounds one file operation on the target.
const opTimeout = 60 * time.Second

// mountView runs in the helper: it opens /dev/fuse and creates a detached
// FUSE mount whose requests go to that fd. It returns the device fd and
// an O_PATH fd of the mount's root, both close-on-exec.
func mountView() (dev, root int, err error) {
	dev, err = unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("opening /dev/fuse: %w", err)
	}
	fsfd, err := unix.Fsopen("fuse", unix.FSOPEN_CLOEXEC)
	if err != nil {
		unix.Close(dev)
		return -1, -1, fmt.Errorf("fsopen fuse: %w", err)
	}
	defer unix.Close(fsfd)
	opts := [][2]string{
		{"fd", strconv.Itoa(dev)},
		{"rootmode", "40000"},
		{"user_id", strconv.Itoa(os.Getuid())},
		{"group_id", strconv.Itoa(os.Getgid())},
		{"max_read", strconv.Itoa(1 << 20)},
	}
	for _, o := range opts {
		if err := unix.FsconfigSetString(fsfd, o[0], o[1]); err != nil {
			unix.Close(dev)
			return -1, -1, fmt.Errorf("fsconfig %s=%s: %w", o[0], o[1], err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		unix.Close(dev)
		return -1, -1, fmt.Errorf("creating the FUSE mount: %w", err)
	}
	root, err = unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		unix.Close(dev)
		return -1, -1, fmt.Errorf("fsmount: %w", err)
	}
	return dev, root, nil
}

// fuseView serves the view and implements remoteFS on top of it.
type fuseView struct {
	root  int    // O_PATH fd of the view's root
	mntID uint64 // its mount id, to recognise fds the program holds in it
	dev   uint64 // its device number, st_dev of its files
	srv   *fuse.Server
	done  chan struct{} // closed when the server's loop returns
}

// serveView starts serving the FUSE device dev (the helper's) from files,
// whose root is the fd root. It takes ownership of both.
func serveView(dev, root int, files FileSystem, log *slog.Logger) (*fuseView, error) {
	var stx unix.Statx_t
	if err := unix.Statx(root, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &stx); err != nil {
		unix.Close(dev)
		unix.Close(root)
		return nil, fmt.Errorf("statx of the FUSE root: %w", err)
	}
	timeout := viewTimeout
	rootNode := &viewNode{files: files, log: log, ro: &roCache{}}
	raw := fs.NewNodeFS(rootNode, &fs.Options{
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
	})
	// go-fuse answers the kernel's INIT with these: 1 MiB reads and writes.
	// Extended attributes are on, for fgetxattr/flistxattr of a view fd
	// (the kernel's own security.capability lookup on each write is
	// answered here, see Getxattr).
	opts := fuse.MountOptions{MaxWrite: 1 << 20, MaxReadAhead: 1 << 20, MaxBackground: 64}
	// "/dev/fd/N" tells go-fuse the mount exists and N is its device.
	srv, err := fuse.NewServer(raw, "/dev/fd/"+strconv.Itoa(dev), &opts)
	if err != nil {
		unix.Close(dev)
		unix.Close(root)
		return nil, fmt.Errorf("serving the FUSE view: %w", err)
	}
	v := &fuseView{root: root, mntID: stx.Mnt_id, dev: unix.Mkdev(stx.Dev_major, stx.Dev_minor), srv: srv, done: make(chan struct{})}
	go func() {
		defer close(v.done)
		srv.Serve() // returns when the kernel ends the connection
	}()
	return v, nil
}

// close drops mirrord's reference to the view. Once the program and its
// children have closed theirs, the kernel destroys the mount and the
// server returns; if something still holds a file open after a second,
// the connection is aborted (root only: fusectl).
func (v *fuseView) close() {
	var st unix.Stat_t
	statErr := unix.Fstat(v.root, &st)
	unix.Close(v.root)
	select {
	case <-v.done:
		return
	case <-time.After(time.Second):
	}
	if statErr == nil {
		abort := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", unix.Minor(st.Dev))
		_ = os.WriteFile(abort, []byte("1"), 0)
	}
	select {
	case <-v.done:
	case <-time.After(time.Second):
	}
}

func relPath(p string) string {
	rel := strings.TrimPrefix(path.Clean(p), "/")
	if rel == "" {
		return "."
	}
	return rel
}

func (v *fuseView) openat2(p string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: unix.RESOLVE_IN_ROOT}
	if flags&unix.O_CREAT != 0 || flags&unix.O_TMPFILE == unix.O_TMPFILE {
		how.Mode = uint64(mode & 0o7777)
	}
	for {
		fd, err := unix.Openat2(v.root, relPath(p), &how)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func (v *fuseView) open(_ context.Context, p string, flags int, mode uint32) (int, error) {
	return v.openat2(p, flags, mode)
}

func (v *fuseView) pathFD(p string, follow bool) (int, error) {
	flags := unix.O_PATH
	if !follow {
		flags |= unix.O_NOFOLLOW
	}
	return v.openat2(p, flags, 0)
}

func (v *fuseView) stat(_ context.Context, p string, follow bool) (unix.Stat_t, error) {
	var st unix.Stat_t
	fd, err := v.pathFD(p, follow)
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)
	return st, unix.Fstat(fd, &st)
}

func (v *fuseView) statx(_ context.Context, p string, follow bool, flags, mask int) (unix.Statx_t, error) {
	var stx unix.Statx_t
	fd, err := v.pathFD(p, follow)
	if err != nil {
		return stx, err
	}
	defer unix.Close(fd)
	sync := flags & (unix.AT_STATX_FORCE_SYNC | unix.AT_STATX_DONT_SYNC)
	return stx, unix.Statx(fd, "", unix.AT_EMPTY_PATH|sync, mask, &stx)
}

func (v *fuseView) readlink(_ context.Context, p string) (string, error) {
	fd, err := v.pathFD(p, false)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, "", buf)
	if err == unix.ENOENT {
		// readlinkat with an empty path says ENOENT for a file that is
		// not a symlink; readlink(2) on its path says EINVAL, which is
		// what programs (glibc's realpath) test for.
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFLNK {
			return "", unix.EINVAL
		}
	}
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// parent opens the directory holding p (O_PATH) and returns p's name.
func (v *fuseView) parent(p string) (int, string, error) {
	dir, base := path.Split(path.Clean(p))
	if base == "" {
		return -1, "", unix.EBUSY // the root itself
	}
	fd, err := v.openat2(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	return fd, base, err
}

func (v *fuseView) unlink(_ context.Context, p string, dir bool) error {
	fd, base, err := v.parent(p)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	flags := 0
	if dir {
		flags = unix.AT_REMOVEDIR
	}
	return unix.Unlinkat(fd, base, flags)
}

func (v *fuseView) mkdir(_ context.Context, p string, mode uint32) error {
	fd, base, err := v.parent(p)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Mkdirat(fd, base, mode)
}

func (v *fuseView) rename(_ context.Context, from, to string, flags uint) error {
	ofd, obase, err := v.parent(from)
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	nfd, nbase, err := v.parent(to)
	if err != nil {
		return err
	}
	defer unix.Close(nfd)
	return unix.Renameat2(ofd, obase, nfd, nbase, flags)
}

// dir recognises a directory in the view by its mount id. The attributes
// are not refreshed (AT_STATX_DONT_SYNC), so no FUSE request is made.
func (v *fuseView) dir(link, _ string) (bool, string) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, link, unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &stx); err != nil {
		return false, ""
	}
	return stx.Mask&unix.STATX_MNT_ID != 0 && stx.Mnt_id == v.mntID, ""
}

// viewNode is a file or directory of the view; its path in the tree is
// its path on the target.
type viewNode struct {
	fs.Inode
	files FileSystem
	log   *slog.Logger
	ro    *roCache // the view's, shared by all nodes

	mu     sync.Mutex
	shared *sharedFile // this file open read-only on the target, if recently
}

var (
	_ fs.NodeLookuper    = (*viewNode)(nil)
	_ fs.NodeGetattrer   = (*viewNode)(nil)
	_ fs.NodeStatxer     = (*viewNode)(nil)
	_ fs.NodeSetattrer   = (*viewNode)(nil)
	_ fs.NodeReaddirer   = (*viewNode)(nil)
	_ fs.NodeReadlinker  = (*viewNode)(nil)
	_ fs.NodeOpener      = (*viewNode)(nil)
	_ fs.NodeCreater     = (*viewNode)(nil)
	_ fs.NodeMkdirer     = (*viewNode)(nil)
	_ fs.NodeUnlinker    = (*viewNode)(nil)
	_ fs.NodeRmdirer     = (*viewNode)(nil)
	_ fs.NodeRenamer     = (*viewNode)(nil)
	_ fs.NodeLinker      = (*viewNode)(nil)
	_ fs.NodeSymlinker   = (*viewNode)(nil)
	_ fs.NodeGetxattrer  = (*viewNode)(nil)
	_ fs.NodeListxattrer = (*viewNode)(nil)
	_ fs.NodeStatfser    = (*viewNode)(nil)
)

func (n *viewNode) remotePath() string { return "/" + n.Path(nil) }

func (n *viewNode) child(name string) string { return path.Join(n.remotePath(), name) }

// opCtx detaches an operation from the kernel's interrupt: the Go runtime
// signals its threads every few milliseconds, and an interrupted request
// would fail with EINTR for nothing. The operation is bounded instead.
func opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
}

// rootIno is the view's root's inode number (go-fuse's root node).
const rootIno = 1

// viewIno makes a FUSE inode number from the target's device and inode
// numbers: files of different file systems of the target must not share
// one, or the kernel would take them for the same file.
func viewIno(dev, ino uint64) uint64 {
	x := ino ^ (dev * 0x9e3779b97f4a7c15)
	if x <= rootIno {
		x += 2
	}
	return x
}

// fillAttr gives the kernel the target's attributes: its blocks and
// block size too, which stat and statx of a view file then show (the
// kernel keeps the block size when it is a power of two).
func fillAttr(a *fuse.Attr, fi *protocol.FileInfo) {
	a.Ino = viewIno(fi.Dev, fi.Ino)
	a.Size = uint64(fi.Size)
	blocks, blksize := fi.Space()
	a.Blocks, a.Blksize = uint64(blocks), uint32(blksize)
	a.Rdev = uint32(fi.Rdev)
	a.Mode = fi.Mode
	a.Nlink = uint32(fi.Nlink)
	a.Uid, a.Gid = fi.UID, fi.GID
	a.Atime, a.Atimensec = uint64(fi.Atime/1e9), uint32(fi.Atime%1e9)
	a.Mtime, a.Mtimensec = uint64(fi.Mtime/1e9), uint32(fi.Mtime%1e9)
	a.Ctime, a.Ctimensec = uint64(fi.Ctime/1e9), uint32(fi.Ctime%1e9)
}

func (n *viewNode) newChild(ctx context.Context, fi *protocol.FileInfo, out *fuse.EntryOut) *fs.Inode {
	fillAttr(&out.Attr, fi)
	node := &viewNode{files: n.files, log: n.log, ro: n.ro}
	return n.NewInode(ctx, node, fs.StableAttr{Mode: fi.Mode & syscall.S_IFMT, Ino: out.Attr.Ino})
}

func (n *viewNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	fi, err := n.files.Stat(ctx, n.child(name), false)
	if err != nil {
		return nil, errnoOf(err)
	}
	return n.newChild(ctx, fi, out), 0
}

// Statx answers the kernel's FUSE_STATX, which it sends for a statx that
// asks for more than stat's fields (the birth time, Linux 6.6 and later):
// the target's fields with the mask its kernel gave.
func (n *viewNode) Statx(ctx context.Context, _ fs.FileHandle, _, _ uint32, out *fuse.StatxOut) syscall.Errno {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	fi, err := n.files.Stat(ctx, n.remotePath(), false)
	if err != nil {
		return errnoOf(err)
	}
	var a fuse.Attr
	fillAttr(&a, fi)
	x := &out.Statx
	x.Mask = fi.Mask & (protocol.StatxBasicStats | protocol.StatxBtime)
	if x.Mask == 0 {
		x.Mask = protocol.StatxBasicStats
	}
	x.Blksize, x.Nlink, x.Uid, x.Gid, x.Mode = a.Blksize, a.Nlink, a.Uid, a.Gid, uint16(a.Mode)
	x.Ino, x.Size, x.Blocks = a.Ino, a.Size, a.Blocks
	x.RdevMajor, x.RdevMinor = unix.Major(fi.Rdev), unix.Minor(fi.Rdev)
	for _, t := range []struct {
		dst *fuse.SxTime
		ns  int64
	}{{&x.Atime, fi.Atime}, {&x.Mtime, fi.Mtime}, {&x.Ctime, fi.Ctime}, {&x.Btime, fi.Btime}} {
		t.dst.Sec, t.dst.Nsec = uint64(t.ns/1e9), uint32(t.ns%1e9)
	}
	return 0
}

func (n *viewNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	fi, err := n.files.Stat(ctx, n.remotePath(), false)
	if err != nil {
		return errnoOf(err)
	}
	fillAttr(&out.Attr, fi)
	return 0
}

// Setattr truncates (open with O_TRUNC, ftruncate) and changes mode,
// owner and times (fchmod, fchown, futimens, and the path calls below a
// view directory) on the target.
func (n *viewNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	if size, ok := in.GetSize(); ok {
		if err := n.files.Truncate(ctx, n.remotePath(), int64(size)); err != nil {
			return errnoOf(err)
		}
	}
	var a protocol.SetAttr
	change := false
	if m, ok := in.GetMode(); ok {
		a.Mode, change = &m, true
	}
	if u, ok := in.GetUID(); ok {
		a.UID, change = &u, true
	}
	if g, ok := in.GetGID(); ok {
		a.GID, change = &g, true
	}
	// The target's clock, not this machine's, for "now".
	for _, t := range []struct {
		set, now uint32
		sec      uint64
		nsec     uint32
		dst      **int64
	}{
		{fuse.FATTR_ATIME, fuse.FATTR_ATIME_NOW, in.Atime, in.Atimensec, &a.Atime},
		{fuse.FATTR_MTIME, fuse.FATTR_MTIME_NOW, in.Mtime, in.Mtimensec, &a.Mtime},
	} {
		if in.Valid&t.set == 0 {
			continue
		}
		v := int64(t.sec)*1e9 + int64(t.nsec)
		if in.Valid&t.now != 0 {
			v = protocol.TimeNow
		}
		*t.dst, change = &v, true
	}
	if change {
		if err := n.files.Setattr(ctx, n.remotePath(), false, a); err != nil {
			return errnoOf(err)
		}
	}
	return n.Getattr(ctx, fh, out)
}

func (n *viewNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	from := "/" + target.EmbeddedInode().Path(nil)
	if err := n.files.Link(ctx, from, n.child(name)); err != nil {
		return nil, errnoOf(err)
	}
	return n.Lookup(ctx, name, out)
}

func (n *viewNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	if err := n.files.Symlink(ctx, target, n.child(name)); err != nil {
		return nil, errnoOf(err)
	}
	return n.Lookup(ctx, name, out)
}

func (n *viewNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	entries, err := n.files.ReadDir(ctx, n.remotePath())
	if err != nil {
		return nil, errnoOf(err)
	}
	// The kernel does not make up "." and "..": `ls -a` expects them.
	self := n.StableAttr().Ino
	parent := uint64(1)
	if _, p := n.Parent(); p != nil {
		parent = p.StableAttr().Ino
	}
	list := make([]fuse.DirEntry, 0, len(entries)+2)
	list = append(list, fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: self}, fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: parent})
	for _, e := range entries {
		list = append(list, fuse.DirEntry{Name: e.Name, Mode: e.Mode & syscall.S_IFMT, Ino: viewIno(e.Dev, e.Ino)})
	}
	return fs.NewListDirStream(list), 0
}

func (n *viewNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	target, err := n.files.Readlink(ctx, n.remotePath())
	if err != nil {
		return nil, errnoOf(err)
	}
	return []byte(target), 0
}

// Getxattr, Listxattr and Statfs answer fgetxattr, flistxattr and fstatfs
// of a view fd (and the path calls below a view directory the program
// holds) from the target. A node is the entry itself, so a symlink's
// attributes are its own, as lgetxattr's are.
func (n *viewNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if attr == "security.capability" {
		// The kernel asks this before every write, to drop file
		// capabilities; a round trip to the target per write would be
		// wasted: a file's capabilities mean nothing to a program here.
		return 0, syscall.ENODATA
	}
	ctx, cancel := opCtx(ctx)
	defer cancel()
	v, err := n.files.Getxattr(ctx, n.remotePath(), attr, false)
	if err != nil {
		return 0, errnoOf(err)
	}
	if len(v) > len(dest) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *viewNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	names, err := n.files.Listxattr(ctx, n.remotePath(), false)
	if err != nil {
		return 0, errnoOf(err)
	}
	var v []byte
	for _, nm := range names {
		v = append(append(v, nm...), 0)
	}
	if len(v) > len(dest) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *viewNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	s, err := n.files.Statfs(ctx, n.remotePath())
	if err != nil {
		return errnoOf(err)
	}
	*out = fuse.StatfsOut{Blocks: s.Blocks, Bfree: s.Bfree, Bavail: s.Bavail, Files: s.Files, Ffree: s.Ffree,
		Bsize: uint32(s.Bsize), NameLen: uint32(s.Namelen), Frsize: uint32(s.Frsize)}
	return 0
}

// openFlags keeps the open(2) flags that matter to the target.
func openFlags(flags uint32) int {
	return int(flags) & (unix.O_ACCMODE | unix.O_APPEND | unix.O_TRUNC | unix.O_SYNC | unix.O_DSYNC)
}

func (n *viewNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	if openFlags(flags) == unix.O_RDONLY {
		return n.openShared(ctx)
	}
	f, err := n.files.Open(ctx, n.remotePath(), openFlags(flags), 0)
	if err != nil {
		return nil, 0, errnoOf(err)
	}
	return &viewHandle{f: f}, 0, 0
}

// Read-only opens share one open file on the target per node. An open
// that comes within viewTimeout of the target's open reuses it, with no
// round trip to the agent (which is most of an open's cost: ~0.8 ms of
// 0.9 ms in the bench). That is the lifetime the kernel already gives the
// view's names and attributes: a file replaced (renamed over, deleted
// and made again) or deleted on the target is seen so by the opens that
// start at most viewTimeout after the change, as a changed name is; a
// file written in place is seen at once, since reads go to the same file
// on the target.
// Handles share the file safely: reads are positional (pread).
//
// A shared file no handle uses is closed when it can no longer be reused
// (viewTimeout after its open), and at most maxIdleShared of them wait at
// once across the view, so the agent's open files stay bounded.
type sharedFile struct {
	f      RemoteFile
	opened time.Time
	refs   int
	idle   *time.Timer // set while refs is 0 and the file waits for reuse
}

const maxIdleShared = 256

// roCache counts the view's idle shared files.
type roCache struct {
	mu   sync.Mutex
	idle int
}

func (c *roCache) take() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idle >= maxIdleShared {
		return false
	}
	c.idle++
	return true
}

func (c *roCache) done() {
	c.mu.Lock()
	c.idle--
	c.mu.Unlock()
}

// sharedHandle is a read-only handle on a node's shared file.
type sharedHandle struct {
	viewHandle
	n  *viewNode
	sf *sharedFile
}

var _ fs.FileReleaser = (*sharedHandle)(nil)

// openShared opens the node read-only. The handles need no FLUSH on
// close (FOPEN_NOFLUSH): nothing is buffered for a read-only file, and the
// kernel then spares close(2) a request to mirrord.
func (n *viewNode) openShared(ctx context.Context) (fs.FileHandle, uint32, syscall.Errno) {
	n.mu.Lock()
	if sf := n.shared; sf != nil && time.Since(sf.opened) < viewTimeout {
		if sf.refs == 0 && sf.idle != nil {
			if sf.idle.Stop() {
				n.ro.done()
			}
			sf.idle = nil
		}
		sf.refs++
		n.mu.Unlock()
		return &sharedHandle{viewHandle: viewHandle{f: sf.f}, n: n, sf: sf}, fuse.FOPEN_NOFLUSH, 0
	}
	n.mu.Unlock()
	opened := time.Now()
	f, err := n.files.Open(ctx, n.remotePath(), unix.O_RDONLY, 0)
	if err != nil {
		return nil, 0, errnoOf(err)
	}
	sf := &sharedFile{f: f, opened: opened, refs: 1}
	n.mu.Lock()
	old := n.shared
	n.shared = sf
	var closeOld bool
	if old != nil && old.refs == 0 && old.idle != nil {
		// Expired but not yet closed by its timer: close it now.
		// A timer that already fired finds idle nil and leaves the
		// file to us; either way it is closed here.
		if old.idle.Stop() {
			n.ro.done()
		}
		old.idle, closeOld = nil, true
	}
	n.mu.Unlock()
	if closeOld {
		old.f.Close()
	}
	return &sharedHandle{viewHandle: viewHandle{f: f}, n: n, sf: sf}, fuse.FOPEN_NOFLUSH, 0
}

// Release lets go of the shared file: it is closed on the target now if
// it cannot be reused (expired, replaced, or too many idle), else when it
// expires. The kernel does not wait for RELEASE anyway.
func (h *sharedHandle) Release(context.Context) syscall.Errno {
	n, sf := h.n, h.sf
	n.mu.Lock()
	sf.refs--
	if sf.refs > 0 {
		n.mu.Unlock()
		return 0
	}
	left := viewTimeout - time.Since(sf.opened)
	if n.shared != sf || left <= 0 || !n.ro.take() {
		if n.shared == sf {
			n.shared = nil
		}
		n.mu.Unlock()
		return errnoOrZero(sf.f.Close())
	}
	// The timer, once it fires, gives back the idle slot whatever it
	// finds; whoever stops it first does instead.
	sf.idle = time.AfterFunc(left, func() {
		defer n.ro.done()
		n.mu.Lock()
		if sf.idle == nil || sf.refs > 0 {
			n.mu.Unlock()
			return // reused or closed meanwhile
		}
		sf.idle = nil
		if n.shared == sf {
			n.shared = nil
		}
		n.mu.Unlock()
		sf.f.Close()
	})
	n.mu.Unlock()
	return 0
}

func (n *viewNode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	p := n.child(name)
	f, err := n.files.Open(ctx, p, openFlags(flags)|unix.O_CREAT|int(flags)&unix.O_EXCL, mode&0o7777)
	if err != nil {
		return nil, nil, 0, errnoOf(err)
	}
	fi, err := n.files.Stat(ctx, p, false)
	if err != nil {
		f.Close()
		return nil, nil, 0, errnoOf(err)
	}
	return n.newChild(ctx, fi, out), &viewHandle{f: f}, 0, 0
}

func (n *viewNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	p := n.child(name)
	if err := n.files.Mkdir(ctx, p, mode&0o7777); err != nil {
		return nil, errnoOf(err)
	}
	fi, err := n.files.Stat(ctx, p, false)
	if err != nil {
		return nil, errnoOf(err)
	}
	return n.newChild(ctx, fi, out), 0
}

func (n *viewNode) Unlink(ctx context.Context, name string) syscall.Errno {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	return errnoOrZero(n.files.Unlink(ctx, n.child(name), false))
}

func (n *viewNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	return errnoOrZero(n.files.Unlink(ctx, n.child(name), true))
}

func (n *viewNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	ctx, cancel := opCtx(ctx)
	defer cancel()
	to := path.Join("/"+newParent.EmbeddedInode().Path(nil), newName)
	return errnoOrZero(renameRemote(ctx, n.files, n.child(name), to, uint(flags)))
}

// renameRemote renames on the target; of renameat2's flags only
// RENAME_NOREPLACE is supported (checked first, so not atomically).
func renameRemote(ctx context.Context, files FileSystem, from, to string, flags uint) error {
	switch flags {
	case 0:
	case unix.RENAME_NOREPLACE:
		if _, err := files.Stat(ctx, to, false); err == nil {
			return unix.EEXIST
		} else if errnoOf(err) != unix.ENOENT {
			return err
		}
	default:
		return unix.EINVAL
	}
	return files.Rename(ctx, from, to)
}

func errnoOrZero(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return errnoOf(err)
}

// viewHandle is a file of the target open through the view.
//
// The kernel asks for at most 128 KiB per read (the default readahead of
// a FUSE mount; the server may only lower it), one agent round trip each.
// Once a file is read sequentially, the handle fetches readWindow bytes at
// a time instead (the agent pipelines them in 1 MiB chunks) and answers
// the following reads from them: 100 MiB took 2.6 s in 128 KiB reads,
// 0.4 s in 1 MiB ones.
type viewHandle struct {
	f RemoteFile

	mu      sync.Mutex
	win     []byte // data at winOff, read ahead
	winOff  int64
	winEOF  bool  // win ends at the end of the file
	lastEnd int64 // end of the last read: the next one is sequential if it starts here
}

const readWindow = 2 << 20

var (
	_ fs.FileReader   = (*viewHandle)(nil)
	_ fs.FileWriter   = (*viewHandle)(nil)
	_ fs.FileReleaser = (*viewHandle)(nil)
	_ fs.FileFlusher  = (*viewHandle)(nil)
	_ fs.FileFsyncer  = (*viewHandle)(nil)
)

func (h *viewHandle) Read(_ context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sequential := off == h.lastEnd && off > 0
	end := off + int64(len(dest))
	if off < h.winOff || off > h.winOff+int64(len(h.win)) || (end > h.winOff+int64(len(h.win)) && !h.winEOF) {
		if !sequential {
			// Random access, or the first read: no window (small files
			// never get one).
			n, err := h.f.ReadAt(dest, off)
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, errnoOf(err)
			}
			h.lastEnd = off + int64(n)
			return fuse.ReadResultData(dest[:n]), 0
		}
		size := max(readWindow, len(dest))
		if cap(h.win) < size {
			h.win = make([]byte, size)
		}
		n, err := h.f.ReadAt(h.win[:size], off)
		if err != nil && !errors.Is(err, io.EOF) {
			h.win = h.win[:0]
			return nil, errnoOf(err)
		}
		h.win, h.winOff, h.winEOF = h.win[:n], off, errors.Is(err, io.EOF)
	}
	from := off - h.winOff
	n := copy(dest, h.win[from:])
	h.lastEnd = off + int64(n)
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *viewHandle) Write(_ context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	h.mu.Lock()
	h.win, h.winOff, h.winEOF = h.win[:0], 0, false // it may hold what this overwrites
	h.mu.Unlock()
	n, err := h.f.WriteAt(data, off)
	if err != nil {
		return uint32(n), errnoOf(err)
	}
	return uint32(n), 0
}

func (h *viewHandle) Release(context.Context) syscall.Errno { return errnoOrZero(h.f.Close()) }

func (h *viewHandle) Flush(context.Context) syscall.Errno { return 0 }

func (h *viewHandle) Fsync(context.Context, uint32) syscall.Errno { return 0 }
