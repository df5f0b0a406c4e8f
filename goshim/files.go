package goshim

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"syscall"

	"github.com/mirrord-go/mirrord/fsfilter"
	"github.com/mirrord-go/mirrord/protocol"
)

// FileSystem is the target's file system. Paths are absolute paths of the
// target. Errors should wrap the syscall.Errno the target's kernel gave
// (ENOENT, EACCES, ...), which the program then sees; any other error
// becomes EIO.
type FileSystem interface {
	// Stat stats path, following a final symlink if follow.
	Stat(ctx context.Context, path string, follow bool) (*protocol.FileInfo, error)
	ReadDir(ctx context.Context, path string) ([]protocol.DirEntry, error)
	Readlink(ctx context.Context, path string) (string, error)
	// Open opens path with open(2) flags (O_CREAT uses perm).
	Open(ctx context.Context, path string, flags int, perm uint32) (RemoteFile, error)
	Unlink(ctx context.Context, path string, dir bool) error
	Mkdir(ctx context.Context, path string, perm uint32) error
	Rename(ctx context.Context, from, to string) error
	Truncate(ctx context.Context, path string, size int64) error
	// Getxattr reads the extended attribute name of path (of a final
	// symlink itself unless follow); Listxattr lists their names.
	Getxattr(ctx context.Context, path, name string, follow bool) ([]byte, error)
	Listxattr(ctx context.Context, path string, follow bool) ([]string, error)
	// Statfs describes the file system that holds path.
	Statfs(ctx context.Context, path string) (*protocol.StatfsInfo, error)
	// Access checks path as access(2) does with mode (F_OK, or
	// R_OK|W_OK|X_OK), of a final symlink itself unless follow, for
	// whoever opens the target's files (the agent).
	Access(ctx context.Context, path string, mode uint32, follow bool) error
	// Setattr changes mode, owner or times (of a final symlink itself
	// unless follow); Link and Symlink make links.
	Setattr(ctx context.Context, path string, follow bool, a protocol.SetAttr) error
	Link(ctx context.Context, from, to string) error
	Symlink(ctx context.Context, target, link string) error
}

// RemoteFile is a file open on the target. ReadAt returns io.EOF at the
// end of the file; with O_APPEND, WriteAt ignores its offset.
type RemoteFile interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
}

// Classifier decides where a file operation goes; *fsfilter.Filter is
// one. The returned path is the one to use (after feature.fs.mapping).
type Classifier interface {
	Classify(path string, write bool) (fsfilter.Action, string)
}

// Files makes the program see the target's files: its file system calls
// are intercepted with a seccomp user-notification filter and answered by
// mirrord per Filter (see doc.go for how).
type Files struct {
	FS     FileSystem // the target's files; required
	Filter Classifier // required
	// RemoteWrites says whether any path may be written on the target
	// (fs mode write, or a read_write list). Only then are unlink, mkdir
	// and rename intercepted; otherwise they always act locally.
	RemoteWrites bool
	// NoFUSE serves remote files without the FUSE view: read-only opens
	// get a memfd snapshot (a pipe for files above MemfdLimit), write-only
	// opens a pipe drained into the remote file, and read-write opens fail
	// with EOPNOTSUPP. This is what happens anyway where /dev/fuse cannot
	// be opened; tests set it to exercise that path.
	NoFUSE bool
	// MemfdLimit is the largest remote file copied whole into a memfd by
	// the fallback; larger files are streamed through a pipe. 0 means
	// 64 MiB.
	MemfdLimit int64
	// Skip, when set, names the programs (by executable path) whose file
	// calls all stay local: skip_processes and the build tools, so that
	// `go run`/`go test` compile from this machine's files and only the
	// built program sees the target's.
	Skip   func(exe string) bool
	Logger *slog.Logger // nil: no logs
	// Warn, when set, gets what the program's user should be told (once
	// per sandbox): that read-write opens of remote files fail without
	// the FUSE view, and why there is none.
	Warn func(msg string)
}

// WithFiles serves the target's files to the program (see Files).
func WithFiles(f Files) Option {
	return func(o *options) { o.files = &f }
}

// ErrSeccomp means the kernel refused the seccomp user-notification
// filter that remote files need (Linux 5.0 or later; 5.14 for everything).
var ErrSeccomp = errors.New("seccomp user notification unavailable")

// errnoOf returns the errno err stands for: the syscall.Errno it wraps,
// EIO otherwise.
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}
