package goshim

import (
	"fmt"
	"log/slog"
	"os"
)

// View is the target's file system as a detached FUSE mount made in
// mirrord's own namespaces, for programs that do not run in a sandbox
// (the preload engine): files opened in it are real kernel files, so
// reads page in on demand and writes reach the target as they happen. It
// needs the right to mount FUSE file systems (root); callers fall back to
// copies when NewView fails.
type View struct{ v *fuseView }

// NewView mounts and serves a view of files.
func NewView(files FileSystem, log *slog.Logger) (*View, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dev, root, err := mountView()
	if err != nil {
		return nil, fmt.Errorf("FUSE view of the target's files: %w", err)
	}
	v, err := serveView(dev, root, files, log)
	if err != nil {
		return nil, err
	}
	return &View{v: v}, nil
}

// Open opens the target's path with open(2) flags and mode.
func (v *View) Open(path string, flags int, mode uint32) (*os.File, error) {
	fd, err := v.v.openat2(path, flags, mode)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Close unmounts the view once no file of it is open any more.
func (v *View) Close() { v.v.close() }
