package goshim

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"
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
	return fileNoPoll(fd, path), nil
}

// Identity returns the device and inode numbers that fstat gives the
// target's file at path, with device dev and inode ino, once opened in
// the view.
func (v *View) Identity(path string, dev, ino uint64) (uint64, uint64) {
	if path == "/" {
		return v.v.dev, rootIno // the view's root is go-fuse's node 1
	}
	return v.v.dev, viewIno(dev, ino)
}

// Close unmounts the view once no file of it is open any more.
func (v *View) Close() { v.v.close() }

// Copies serves the target's files without FUSE, as the sandbox does
// where /dev/fuse cannot be opened: a read gets a snapshot, a write-only
// open a pipe whose content mirrord writes to the target, and a
// read-write open fails with EOPNOTSUPP, since changes to a copy could not
// reach the target (in the log each time; warn, if not nil, gets a
// message for the user once, with why, the reason there is no view).
type Copies struct{ m *memfdFS }

// NewCopies serves copies of files.
func NewCopies(files FileSystem, log *slog.Logger, warn func(msg string), why string) *Copies {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Copies{m: newMemfdFS(files, 0, log, warn, why)}
}

// Open opens the target's path with open(2) flags and mode.
func (c *Copies) Open(path string, flags int, mode uint32) (*os.File, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	fd, err := c.m.open(ctx, path, flags, mode)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Close waits a moment for the writes in flight to reach the target.
func (c *Copies) Close() { c.m.close() }

// fileNoPoll wraps fd, a file of mirrord's own FUSE view, in an *os.File
// that Go's poller leaves alone. os.NewFile registers a non-blocking fd
// (a program's O_NONBLOCK open) with epoll, and epoll asks the file system:
// a FUSE_POLL request to the view, which this very process serves. If the
// process exits while that request is read but not answered, the asking
// thread waits uninterruptibly for an answer that cannot come, and the
// process never ends (seen: a zombie mirrord holding its test for 20
// minutes). The fd is made blocking only while it is wrapped; the open
// file description keeps the program's flags.
func fileNoPoll(fd int, name string) *os.File {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		return os.NewFile(uintptr(fd), name)
	}
	unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
	f := os.NewFile(uintptr(fd), name)
	unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	return f
}
