package goshim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// memfdFS is the fallback where the FUSE view cannot be created (no
// access to /dev/fuse): every remote open gets a snapshot or a stream.
//
//   - read-only regular files: a memfd filled in 1 MiB chunks (seekable,
//     mmap-able; the copy lives in the kernel's shmem, not in mirrord's
//     heap), or for files larger than the limit a pipe fed as the program
//     reads, so a large file is never held whole;
//   - write-only opens: a pipe drained into the remote file in order
//     (fstat says FIFO and seeking fails; os.WriteFile, shells and most
//     loggers do not care);
//   - read-write opens: EOPNOTSUPP, since changes to a snapshot could
//     not reach the target;
//   - directories: a private directory holding one empty entry per remote
//     entry (names and types right, for getdents), mapped back to the
//     remote path when the program uses it as a dirfd.
type memfdFS struct {
	files FileSystem
	limit int64
	log   *slog.Logger
	dev   uint64 // st_dev reported for remote files

	// warn tells the program's user, once, that read-write opens fail
	// and why (noView: why there is no FUSE view).
	warn     func(msg string)
	noView   string
	warnOnce sync.Once

	mu      sync.Mutex
	snapDir string                  // holds directory snapshots; created on first use
	snaps   map[string]string       // snapshot directory -> remote path
	pipes   map[*os.File]*pumpState // mirrord's ends of the pipes being pumped
	writers map[string][]*pumpState // write pipes by remote path
	wg      sync.WaitGroup          // pipe pumps
}

const defaultMemfdLimit = 64 << 20

func newMemfdFS(files FileSystem, limit int64, log *slog.Logger, warn func(string), noView string) *memfdFS {
	if limit <= 0 {
		limit = defaultMemfdLimit
	}
	return &memfdFS{files: files, limit: limit, log: log, dev: unix.Mkdev(0, 0xfffe), warn: warn, noView: noView,
		snaps: map[string]string{}, pipes: map[*os.File]*pumpState{}, writers: map[string][]*pumpState{}}
}

// readWriteRefused says, in the log every time and to the program's user
// once, that a read-write open of a remote file fails without FUSE.
func (m *memfdFS) readWriteRefused(p string) {
	m.log.Warn("read-write open of a remote file without FUSE: not supported", "path", p, "reason", m.noView)
	if m.warn == nil {
		return
	}
	m.warnOnce.Do(func() {
		m.warn(fmt.Sprintf("%s: read-write opens of remote files need FUSE, which mirrord could not mount (%s); "+
			"they fail with EOPNOTSUPP, reads and write-only opens still reach the target (said once)", p, m.noView))
	})
}

func (m *memfdFS) open(ctx context.Context, p string, flags int, mode uint32) (int, error) {
	m.flush(ctx, p)
	acc := flags & unix.O_ACCMODE
	readOnly := acc == unix.O_RDONLY && flags&(unix.O_CREAT|unix.O_TRUNC) == 0
	switch {
	case readOnly || flags&unix.O_PATH != 0:
		fi, err := m.files.Stat(ctx, p, flags&unix.O_NOFOLLOW == 0)
		if err != nil {
			return -1, err
		}
		switch fi.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			return m.snapshotDir(ctx, p)
		case unix.S_IFLNK:
			if flags&unix.O_PATH == 0 {
				return -1, unix.ELOOP // O_NOFOLLOW on a symlink
			}
		}
		if flags&unix.O_DIRECTORY != 0 {
			return -1, unix.ENOTDIR
		}
		if flags&unix.O_PATH != 0 {
			return unix.MemfdCreate(path.Base(p), unix.MFD_CLOEXEC)
		}
		if fi.Size > m.limit {
			return m.readPipe(ctx, p)
		}
		return m.snapshotFile(ctx, p)
	case acc == unix.O_WRONLY:
		return m.writePipe(ctx, p, flags, mode)
	}
	m.readWriteRefused(p)
	return -1, unix.EOPNOTSUPP
}

func (m *memfdFS) snapshotFile(ctx context.Context, p string) (int, error) {
	f, err := m.files.Open(ctx, p, unix.O_RDONLY, 0)
	if err != nil {
		return -1, err
	}
	defer f.Close()
	fd, err := unix.MemfdCreate(path.Base(p), unix.MFD_CLOEXEC)
	if err != nil {
		return -1, err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); ; {
		n, err := f.ReadAt(buf, off)
		if n > 0 {
			if _, werr := unix.Pwrite(fd, buf[:n], off); werr != nil {
				unix.Close(fd)
				return -1, werr
			}
			off += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return fd, nil
		}
		if err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
}

// pipe returns a pipe: mirrord's end (kept) as a non-blocking *os.File,
// served by Go's poller, so that a pump waiting on it wakes when close
// closes it; the program's end (blocking, like any file) as a raw fd.
func pipe(keepRead bool) (kept *os.File, other int, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, -1, err
	}
	k, o := fds[1], fds[0]
	if keepRead {
		k, o = fds[0], fds[1]
	}
	if err := unix.SetNonblock(k, true); err != nil {
		unix.Close(k)
		unix.Close(o)
		return nil, -1, err
	}
	return os.NewFile(uintptr(k), "mirrord-pipe"), o, nil
}

func (m *memfdFS) readPipe(ctx context.Context, p string) (int, error) {
	f, err := m.files.Open(ctx, p, unix.O_RDONLY, 0)
	if err != nil {
		return -1, err
	}
	w, r, err := pipe(false)
	if err != nil {
		f.Close()
		return -1, err
	}
	m.pump(w, "")
	go func() {
		defer f.Close()
		defer m.unpump(w, "")
		// The pipe writes block while the program does not read: at most
		// one chunk is held here.
		if _, err := io.Copy(w, io.NewSectionReader(f, 0, 1<<62)); err != nil {
			m.log.Debug("streaming a remote file", "path", p, "err", err)
		}
	}()
	return r, nil
}

// writePipe gives the program a pipe drained into the remote file. Each
// read from the pipe and the remote write it feeds happen under the
// pump's lock, so flush can tell from an empty pipe that all the program
// wrote so far is on the target.
func (m *memfdFS) writePipe(ctx context.Context, p string, flags int, mode uint32) (int, error) {
	f, err := m.files.Open(ctx, p, flags&^unix.O_CLOEXEC, mode)
	if err != nil {
		return -1, err
	}
	r, w, err := pipe(true)
	if err != nil {
		f.Close()
		return -1, err
	}
	rc, err := r.SyscallConn()
	if err != nil {
		r.Close()
		unix.Close(w)
		f.Close()
		return -1, err
	}
	pm := m.pump(r, p)
	go func() {
		defer f.Close()
		defer m.unpump(r, p)
		buf := make([]byte, 1<<20)
		var off int64
		for done := false; !done; {
			err := rc.Read(func(fd uintptr) bool {
				pm.mu.Lock()
				defer pm.mu.Unlock()
				n, err := unix.Read(int(fd), buf)
				for err == unix.EINTR {
					n, err = unix.Read(int(fd), buf)
				}
				switch {
				case err == unix.EAGAIN:
					return false // wait until readable
				case err != nil || n == 0:
					done = true // EOF: every copy of the write end is closed
				default:
					if _, werr := f.WriteAt(buf[:n], off); werr != nil {
						m.log.Warn("writing a remote file", "path", p, "err", werr)
						done = true // the program's next write gets EPIPE
					}
					off += int64(n)
				}
				return true
			})
			if err != nil {
				return // closed by close
			}
		}
	}()
	return w, nil
}

// pumpState is one pipe a goroutine serves.
type pumpState struct {
	f  *os.File
	mu sync.Mutex // held while data moves from the pipe to the target
}

// pump registers a pipe end a goroutine is about to serve, so that close
// can wake it, and flush find it by remote path (write pipes).
func (m *memfdFS) pump(f *os.File, remote string) *pumpState {
	pm := &pumpState{f: f}
	m.mu.Lock()
	m.pipes[f] = pm
	if remote != "" {
		m.writers[remote] = append(m.writers[remote], pm)
	}
	m.mu.Unlock()
	m.wg.Add(1)
	return pm
}

func (m *memfdFS) unpump(f *os.File, remote string) {
	m.mu.Lock()
	pm := m.pipes[f]
	delete(m.pipes, f)
	if remote != "" {
		ws := m.writers[remote]
		ws = slices.DeleteFunc(ws, func(x *pumpState) bool { return x == pm })
		if len(ws) == 0 {
			delete(m.writers, remote)
		} else {
			m.writers[remote] = ws
		}
	}
	m.mu.Unlock()
	f.Close()
	m.wg.Done()
}

// flush waits until what the program wrote so far into pipes for path p
// is on the target, so that an open, stat or rename of p that follows a
// write sees it (a program's close of a pipe does not wait for that).
func (m *memfdFS) flush(ctx context.Context, p string) {
	m.mu.Lock()
	ws := slices.Clone(m.writers[p])
	m.mu.Unlock()
	for _, pm := range ws {
		rc, err := pm.f.SyscallConn()
		if err != nil {
			continue
		}
		for {
			pending := 0
			pm.mu.Lock()
			cerr := rc.Control(func(fd uintptr) { pending, _ = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }) // FIONREAD
			pm.mu.Unlock()
			if cerr != nil || pending == 0 {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
	}
}

func (m *memfdFS) snapshotDir(ctx context.Context, p string) (int, error) {
	entries, err := m.files.ReadDir(ctx, p)
	if err != nil {
		return -1, err
	}
	m.mu.Lock()
	if m.snapDir == "" {
		if m.snapDir, err = os.MkdirTemp("", "mirrord-dirs-"); err != nil {
			m.mu.Unlock()
			return -1, err
		}
	}
	d := filepath.Join(m.snapDir, strconv.Itoa(len(m.snaps)))
	m.snaps[d] = p
	m.mu.Unlock()
	if err := os.Mkdir(d, 0o700); err != nil {
		return -1, err
	}
	for _, e := range entries {
		name := filepath.Join(d, e.Name)
		switch e.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			err = os.Mkdir(name, 0o700)
		case unix.S_IFLNK:
			err = os.Symlink(".", name)
		default:
			err = os.WriteFile(name, nil, 0o600)
		}
		if err != nil {
			return -1, err
		}
	}
	return unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// dir maps a directory snapshot back to its remote path.
func (m *memfdFS) dir(_ string, target string) (bool, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.snapDir == "" || !strings.HasPrefix(target, m.snapDir+"/") {
		return false, ""
	}
	rest := strings.TrimPrefix(target, m.snapDir+"/")
	snap, sub, _ := strings.Cut(rest, "/")
	remote, ok := m.snaps[filepath.Join(m.snapDir, snap)]
	if !ok {
		return false, ""
	}
	return false, path.Join(remote, sub)
}

func (m *memfdFS) stat(ctx context.Context, p string, follow bool) (unix.Stat_t, error) {
	var st unix.Stat_t
	m.flush(ctx, p)
	fi, err := m.files.Stat(ctx, p, follow)
	if err != nil {
		return st, err
	}
	st.Dev = m.dev
	st.Ino = fi.Ino
	setUint(&st.Nlink, fi.Nlink)
	st.Mode = fi.Mode
	st.Uid, st.Gid = fi.UID, fi.GID
	st.Size = fi.Size
	blocks, blksize := fi.Space()
	setInt(&st.Blksize, blksize)
	st.Blocks = blocks
	st.Rdev = fi.Rdev
	st.Atim = unix.NsecToTimespec(fi.Atime)
	st.Mtim = unix.NsecToTimespec(fi.Mtime)
	st.Ctim = unix.NsecToTimespec(fi.Ctime)
	return st, nil
}

func (m *memfdFS) statx(ctx context.Context, p string, follow bool, _, _ int) (unix.Statx_t, error) {
	var stx unix.Statx_t
	m.flush(ctx, p)
	fi, err := m.files.Stat(ctx, p, follow)
	if err != nil {
		return stx, err
	}
	// The fields the target's kernel gave, whatever was asked, as the
	// kernel may.
	stx.Mask = fi.Mask & (unix.STATX_BASIC_STATS | unix.STATX_BTIME)
	if stx.Mask == 0 {
		stx.Mask = unix.STATX_BASIC_STATS // an agent before the mask
	}
	blocks, blksize := fi.Space()
	stx.Blksize = uint32(blksize)
	stx.Nlink = uint32(fi.Nlink)
	stx.Uid, stx.Gid = fi.UID, fi.GID
	stx.Mode = uint16(fi.Mode)
	stx.Ino = fi.Ino
	stx.Size = uint64(fi.Size)
	stx.Blocks = uint64(blocks)
	stx.Atime = statxTime(fi.Atime)
	stx.Mtime = statxTime(fi.Mtime)
	stx.Ctime = statxTime(fi.Ctime)
	if stx.Mask&unix.STATX_BTIME != 0 {
		stx.Btime = statxTime(fi.Btime)
	}
	stx.Dev_major, stx.Dev_minor = unix.Major(m.dev), unix.Minor(m.dev)
	stx.Rdev_major, stx.Rdev_minor = unix.Major(fi.Rdev), unix.Minor(fi.Rdev)
	return stx, nil
}

func statxTime(ns int64) unix.StatxTimestamp {
	return unix.StatxTimestamp{Sec: ns / 1e9, Nsec: uint32(ns % 1e9)}
}

func setUint[T ~uint32 | ~uint64](dst *T, v uint64) { *dst = T(v) }
func setInt[T ~int32 | ~int64](dst *T, v int64)     { *dst = T(v) }

func (m *memfdFS) readlink(ctx context.Context, p string) (string, error) {
	return m.files.Readlink(ctx, p)
}

func (m *memfdFS) unlink(ctx context.Context, p string, dir bool) error {
	return m.files.Unlink(ctx, p, dir)
}

func (m *memfdFS) mkdir(ctx context.Context, p string, mode uint32) error {
	return m.files.Mkdir(ctx, p, mode)
}

func (m *memfdFS) rename(ctx context.Context, from, to string, flags uint) error {
	m.flush(ctx, from)
	return renameRemote(ctx, m.files, from, to, flags)
}

// close stops the pumps and removes the directory snapshots.
func (m *memfdFS) close() {
	// The program is gone, so its write ends are closed: the write pumps
	// finish what it wrote and stop by themselves. Something that outlived
	// it may still hold one, so they get a few seconds.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		m.mu.Lock()
		n := 0
		for _, ws := range m.writers {
			n += len(ws)
		}
		m.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	m.mu.Lock()
	for f := range m.pipes {
		f.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.snapDir != "" {
		os.RemoveAll(m.snapDir)
	}
}
