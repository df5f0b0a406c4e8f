package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

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
func sandboxFiles(fs config.FSConfig, proxy *intproxy.Proxy, cwd string, skip func(string) bool, log *slog.Logger) (*goshim.Files, error) {
	if fs.Mode == config.FsLocal {
		return nil, nil
	}
	filter, err := fsFilter(fs, cwd)
	if err != nil {
		return nil, err
	}
	return &goshim.Files{
		FS:           proxyFiles{proxy},
		Filter:       filter,
		RemoteWrites: remoteWrites(fs),
		Skip:         skip,
		Logger:       log,
	}, nil
}

// proxyFiles serves goshim the target's files through the agent, with the
// target's errno in every error.
type proxyFiles struct{ p *intproxy.Proxy }

// remoteErr keeps err's text and makes errors.As find the target's errno.
func remoteErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%v: %w", err, intproxy.Errno(err))
}

func (f proxyFiles) Stat(ctx context.Context, path string, follow bool) (*protocol.FileInfo, error) {
	info, err := f.p.Stat(ctx, path, follow)
	return info, remoteErr(err)
}

func (f proxyFiles) ReadDir(ctx context.Context, path string) ([]protocol.DirEntry, error) {
	entries, err := f.p.ReadDir(ctx, path)
	return entries, remoteErr(err)
}

func (f proxyFiles) Readlink(ctx context.Context, path string) (string, error) {
	target, err := f.p.Readlink(ctx, path)
	return target, remoteErr(err)
}

func (f proxyFiles) Open(ctx context.Context, path string, flags int, perm uint32) (goshim.RemoteFile, error) {
	rf, err := f.p.OpenFile(ctx, path, flags, perm)
	if err != nil {
		return nil, remoteErr(err)
	}
	return remoteFile{rf}, nil
}

func (f proxyFiles) Unlink(ctx context.Context, path string, dir bool) error {
	return remoteErr(f.p.Unlink(ctx, path, dir))
}

func (f proxyFiles) Mkdir(ctx context.Context, path string, perm uint32) error {
	return remoteErr(f.p.Mkdir(ctx, path, perm))
}

func (f proxyFiles) Rename(ctx context.Context, from, to string) error {
	return remoteErr(f.p.Rename(ctx, from, to))
}

func (f proxyFiles) Truncate(ctx context.Context, path string, size int64) error {
	return remoteErr(f.p.Truncate(ctx, path, size))
}

func (f proxyFiles) Getxattr(ctx context.Context, path, name string, follow bool) ([]byte, error) {
	v, err := f.p.Getxattr(ctx, path, name, follow)
	return v, remoteErr(err)
}

func (f proxyFiles) Listxattr(ctx context.Context, path string, follow bool) ([]string, error) {
	names, err := f.p.Listxattr(ctx, path, follow)
	return names, remoteErr(err)
}

func (f proxyFiles) Statfs(ctx context.Context, path string) (*protocol.StatfsInfo, error) {
	s, err := f.p.Statfs(ctx, path)
	return s, remoteErr(err)
}

func (f proxyFiles) Setattr(ctx context.Context, path string, follow bool, a protocol.SetAttr) error {
	return remoteErr(f.p.Setattr(ctx, path, follow, a))
}

func (f proxyFiles) Link(ctx context.Context, from, to string) error {
	return remoteErr(f.p.Link(ctx, from, to))
}

func (f proxyFiles) Symlink(ctx context.Context, target, link string) error {
	return remoteErr(f.p.Symlink(ctx, target, link))
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
