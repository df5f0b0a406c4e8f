package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/fsfilter"
	"github.com/mirrord-go/mirrord/goshim"
	"github.com/mirrord-go/mirrord/intproxy"
	"github.com/mirrord-go/mirrord/protocol"
)

// fsFilter compiles feature.fs for a program running in cwd.
func fsFilter(fs config.FSConfig, cwd string) (*fsfilter.Filter, error) {
	home, _ := os.UserHomeDir()
	return fsfilter.New(fsfilter.Spec{
		Mode:      fsfilter.Mode(fs.Mode),
		ReadWrite: fs.ReadWrite,
		ReadOnly:  fs.ReadOnly,
		Local:     fs.Local,
		NotFound:  fs.NotFound,
		Mapping:   fs.Mapping,
	}, fsfilter.Host{Home: home, Cwd: cwd, TempDir: os.TempDir()})
}

// remoteWrites says whether the target's files may be written: fs mode
// write, or read_write patterns.
func remoteWrites(fs config.FSConfig) bool { return fs.Mode == config.FsWrite || len(fs.ReadWrite) > 0 }

// sandboxFiles returns the goshim file layer for feature.fs, or nil when
// every file is local (mode local): then nothing is intercepted at all.
func sandboxFiles(fs config.FSConfig, target targetFiles, cwd string, skip func(string) bool, log *slog.Logger) (*goshim.Files, error) {
	if fs.Mode == config.FsLocal {
		return nil, nil
	}
	filter, err := fsFilter(fs, cwd)
	if err != nil {
		return nil, err
	}
	return &goshim.Files{
		FS:           target,
		Filter:       filter,
		RemoteWrites: remoteWrites(fs),
		Skip:         skip,
		Logger:       log,
	}, nil
}

// targetFiles serves goshim the target's files, with the target's errno
// in every error: through the internal proxy (proxyFiles), or through the
// session's layer socket for a sandboxed child of a preloaded program
// (layerFiles).
type targetFiles struct {
	do   func(context.Context, *protocol.FileRequest) (*protocol.FileReply, error)
	open func(ctx context.Context, path string, flags int, perm uint32) (goshim.RemoteFile, error)
}

func proxyFiles(p *intproxy.Proxy) targetFiles {
	return targetFiles{do: p.File, open: func(ctx context.Context, path string, flags int, perm uint32) (goshim.RemoteFile, error) {
		rf, err := p.OpenFile(ctx, path, flags, perm)
		if err != nil {
			return nil, err
		}
		return remoteFile{rf}, nil
	}}
}

// layerFiles opens files as fds the session passes: pread and pwrite on
// them are the RemoteFile (with O_APPEND, Linux's pwrite appends).
func layerFiles(c intproxy.LayerClient) targetFiles {
	return targetFiles{do: c.File, open: func(ctx context.Context, path string, flags int, perm uint32) (goshim.RemoteFile, error) {
		f, err := c.OpenFile(ctx, path, flags, perm)
		if err != nil {
			return nil, err
		}
		return passedFile{f, flags&os.O_APPEND != 0}, nil
	}}
}

// passedFile is a file the session passed. Appending writes go to its
// end (os.File refuses WriteAt with O_APPEND); without a view a write-only
// one is the write end of a pipe, which takes writes in order only.
type passedFile struct {
	*os.File
	append bool
}

func (f passedFile) WriteAt(b []byte, off int64) (int, error) {
	if f.append {
		return f.File.Write(b)
	}
	n, err := f.File.WriteAt(b, off)
	if errors.Is(err, syscall.ESPIPE) {
		return f.File.Write(b)
	}
	return n, err
}

// remoteErr keeps err's text and makes errors.As find the target's errno.
func remoteErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%v: %w", err, intproxy.Errno(err))
}

func (f targetFiles) run(ctx context.Context, req protocol.FileRequest) (*protocol.FileReply, error) {
	r, err := f.do(ctx, &req)
	return r, remoteErr(err)
}

func (f targetFiles) Stat(ctx context.Context, path string, follow bool) (*protocol.FileInfo, error) {
	r, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileStat, Path: path, Follow: follow})
	if err != nil {
		return nil, err
	}
	return r.Info, nil
}

func (f targetFiles) ReadDir(ctx context.Context, path string) ([]protocol.DirEntry, error) {
	r, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileReadDir, Path: path})
	if err != nil {
		return nil, err
	}
	return r.Entries, nil
}

func (f targetFiles) Readlink(ctx context.Context, path string) (string, error) {
	r, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileReadlink, Path: path})
	if err != nil {
		return "", err
	}
	return r.Target, nil
}

func (f targetFiles) Open(ctx context.Context, path string, flags int, perm uint32) (goshim.RemoteFile, error) {
	rf, err := f.open(ctx, path, flags, perm)
	return rf, remoteErr(err)
}

func (f targetFiles) Unlink(ctx context.Context, path string, dir bool) error {
	_, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileUnlink, Path: path, Dir: dir})
	return err
}

func (f targetFiles) Mkdir(ctx context.Context, path string, perm uint32) error {
	_, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileMkdir, Path: path, Perm: perm})
	return err
}

func (f targetFiles) Rename(ctx context.Context, from, to string) error {
	_, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileRename, Path: from, NewPath: to})
	return err
}

func (f targetFiles) Truncate(ctx context.Context, path string, size int64) error {
	_, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileTruncate, Path: path, Size: size})
	return err
}

func (f targetFiles) Getxattr(ctx context.Context, path, name string, follow bool) ([]byte, error) {
	r, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileGetxattr, Path: path, Name: name, Follow: follow})
	if err != nil {
		return nil, err
	}
	return r.Value, nil
}

func (f targetFiles) Listxattr(ctx context.Context, path string, follow bool) ([]string, error) {
	r, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileListxattr, Path: path, Follow: follow})
	if err != nil {
		return nil, err
	}
	return r.Names, nil
}

func (f targetFiles) Statfs(ctx context.Context, path string) (*protocol.StatfsInfo, error) {
	r, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileStatfs, Path: path})
	if err != nil {
		return nil, err
	}
	if r.Statfs == nil {
		return nil, remoteErr(syscall.EIO)
	}
	return r.Statfs, nil
}

func (f targetFiles) Access(ctx context.Context, path string, mode uint32, follow bool) error {
	_, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileAccess, Path: path, Perm: mode, Follow: follow})
	return err
}

func (f targetFiles) Setattr(ctx context.Context, path string, follow bool, a protocol.SetAttr) error {
	_, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileSetattr, Path: path, Follow: follow, Attr: &a})
	return err
}

func (f targetFiles) Link(ctx context.Context, from, to string) error {
	_, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileLink, Path: from, NewPath: to})
	return err
}

func (f targetFiles) Symlink(ctx context.Context, target, link string) error {
	_, err := f.run(ctx, protocol.FileRequest{Op: protocol.FileSymlink, NewPath: link, LinkTarget: target})
	return err
}

// remoteFile gives reads and writes the target's errno too; io.EOF stays.
type remoteFile struct{ f *intproxy.RemoteFile }

func (r remoteFile) ReadAt(b []byte, off int64) (int, error) {
	n, err := r.f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, remoteErr(err)
	}
	return n, err
}

func (r remoteFile) WriteAt(b []byte, off int64) (int, error) {
	n, err := r.f.WriteAt(b, off)
	return n, remoteErr(err)
}

func (r remoteFile) Close() error { return r.f.Close() }
