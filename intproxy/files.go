package intproxy

import (
	"context"
	"errors"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/protocol"
)

// Errno returns the errno an agent error stands for (ENOENT, EACCES, ...),
// so that engines can give the program the error the target would; EIO
// when there is none.
func Errno(err error) syscall.Errno {
	var er *protocol.ErrorReply
	if errors.As(err, &er) {
		for e := syscall.Errno(1); e < 4096; e++ {
			if unix.ErrnoName(e) == er.Code {
				return e
			}
		}
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return syscall.EIO
}

// fileRequest runs one file operation on the target and returns its reply.
func (p *Proxy) fileRequest(ctx context.Context, req *protocol.FileRequest) (*protocol.FileReply, error) {
	st, err := p.open(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := protocol.Write(st, req); err != nil {
		return nil, err
	}
	return protocol.ReadReply[*protocol.FileReply](st)
}

// File runs one file operation other than open on the target.
func (p *Proxy) File(ctx context.Context, req *protocol.FileRequest) (*protocol.FileReply, error) {
	if req.Op == protocol.FileOpen {
		return nil, errors.New("file: use OpenFile to open")
	}
	return p.fileRequest(ctx, req)
}

// Stat stats a path of the target (following a final symlink if follow).
func (p *Proxy) Stat(ctx context.Context, path string, follow bool) (*protocol.FileInfo, error) {
	r, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileStat, Path: path, Follow: follow})
	if err != nil {
		return nil, err
	}
	return r.Info, nil
}

// ReadDir lists a directory of the target.
func (p *Proxy) ReadDir(ctx context.Context, path string) ([]protocol.DirEntry, error) {
	r, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileReadDir, Path: path})
	if err != nil {
		return nil, err
	}
	return r.Entries, nil
}

// Readlink reads a symlink of the target.
func (p *Proxy) Readlink(ctx context.Context, path string) (string, error) {
	r, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileReadlink, Path: path})
	if err != nil {
		return "", err
	}
	return r.Target, nil
}

// Unlink, Mkdir and Rename change the target's file system.
func (p *Proxy) Unlink(ctx context.Context, path string, dir bool) error {
	_, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileUnlink, Path: path, Dir: dir})
	return err
}

func (p *Proxy) Mkdir(ctx context.Context, path string, perm uint32) error {
	_, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileMkdir, Path: path, Perm: perm})
	return err
}

func (p *Proxy) Rename(ctx context.Context, from, to string) error {
	_, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileRename, Path: from, NewPath: to})
	return err
}

// Truncate sets the size of a file of the target.
func (p *Proxy) Truncate(ctx context.Context, path string, size int64) error {
	_, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileTruncate, Path: path, Size: size})
	return err
}

// Setattr changes the mode, owner or times of a path of the target (of a
// final symlink itself unless follow).
func (p *Proxy) Setattr(ctx context.Context, path string, follow bool, a protocol.SetAttr) error {
	_, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileSetattr, Path: path, Follow: follow, Attr: &a})
	return err
}

// Link makes to a hard link to from, on the target.
func (p *Proxy) Link(ctx context.Context, from, to string) error {
	_, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileLink, Path: from, NewPath: to})
	return err
}

// Symlink makes link a symlink to target (its text), on the target.
func (p *Proxy) Symlink(ctx context.Context, target, link string) error {
	_, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileSymlink, NewPath: link, LinkTarget: target})
	return err
}

// Getxattr reads an extended attribute of a path of the target (of a
// final symlink itself unless follow).
func (p *Proxy) Getxattr(ctx context.Context, path, name string, follow bool) ([]byte, error) {
	r, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileGetxattr, Path: path, Name: name, Follow: follow})
	if err != nil {
		return nil, err
	}
	return r.Value, nil
}

// Listxattr lists the extended attributes of a path of the target.
func (p *Proxy) Listxattr(ctx context.Context, path string, follow bool) ([]string, error) {
	r, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileListxattr, Path: path, Follow: follow})
	if err != nil {
		return nil, err
	}
	return r.Names, nil
}

// Access checks a path of the target as access(2) does with mode (of a
// final symlink itself unless follow), as the agent sees it: the agent
// opens the target's files for the program.
func (p *Proxy) Access(ctx context.Context, path string, mode uint32, follow bool) error {
	_, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileAccess, Path: path, Perm: mode, Follow: follow})
	return err
}

// Statfs describes the target's file system that holds path.
func (p *Proxy) Statfs(ctx context.Context, path string) (*protocol.StatfsInfo, error) {
	r, err := p.fileRequest(ctx, &protocol.FileRequest{Op: protocol.FileStatfs, Path: path})
	if err != nil {
		return nil, err
	}
	if r.Statfs == nil {
		return nil, syscall.EIO
	}
	return r.Statfs, nil
}

// RemoteFile is a file open on the target. Reads and writes travel in
// chunks of at most 1 MiB, so large files are never loaded whole.
type RemoteFile struct {
	Info *protocol.FileInfo
	mu   sync.Mutex
	st   *yamux.Stream
}

// OpenFile opens a file of the target with open(2) flags.
func (p *Proxy) OpenFile(ctx context.Context, path string, flags int, perm uint32) (*RemoteFile, error) {
	st, err := p.open(ctx)
	if err != nil {
		return nil, err
	}
	if err := protocol.Write(st, &protocol.FileRequest{Op: protocol.FileOpen, Path: path, Flags: flags, Perm: perm}); err != nil {
		st.Close()
		return nil, err
	}
	r, err := protocol.ReadReply[*protocol.FileReply](st)
	if err != nil {
		st.Close()
		return nil, err
	}
	st.SetDeadline(time.Time{})
	return &RemoteFile{Info: r.Info, st: st}, nil
}

const chunk = 1 << 20

// readWindow is how many chunk requests are in flight at once: the agent
// answers them in order on the stream, so a large read costs about one
// round trip per window instead of one per chunk.
const readWindow = 8

// ReadAt implements io.ReaderAt.
func (f *RemoteFile) ReadAt(b []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for n < len(b) {
		// Ask for up to readWindow chunks, then collect the answers.
		var sizes []int
		for asked := n; asked < len(b) && len(sizes) < readWindow; {
			size := min(len(b)-asked, chunk)
			if err := protocol.Write(f.st, &protocol.FileRead{Off: off + int64(asked), Len: size}); err != nil {
				return n, err
			}
			sizes = append(sizes, size)
			asked += size
		}
		var eof bool
		var firstErr error
		for _, size := range sizes {
			d, err := protocol.ReadReply[*protocol.FileData](f.st)
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			if eof || firstErr != nil {
				continue // drain the answers to requests past the end
			}
			n += copy(b[n:], d.Data)
			if d.EOF || len(d.Data) < size {
				eof = d.EOF
				if !eof {
					firstErr = io.ErrUnexpectedEOF
				}
			}
		}
		if firstErr != nil {
			return n, firstErr
		}
		if eof {
			return n, io.EOF
		}
	}
	return n, nil
}

// WriteAt implements io.WriterAt (with O_APPEND, off is ignored).
func (f *RemoteFile) WriteAt(b []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for n < len(b) {
		part := b[n:min(len(b), n+chunk)]
		if err := protocol.Write(f.st, &protocol.FileWrite{Off: off + int64(n), Data: part}); err != nil {
			return n, err
		}
		d, err := protocol.ReadReply[*protocol.FileData](f.st)
		if err != nil {
			return n, err
		}
		n += d.N
		if d.N < len(part) {
			return n, io.ErrShortWrite
		}
	}
	return n, nil
}

// Close closes the file on the target.
func (f *RemoteFile) Close() error { return f.st.Close() }
