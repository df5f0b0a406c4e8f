package goshim

import (
	"context"
	"debug/elf"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/fsfilter"
	"github.com/mirrord-go/mirrord/protocol"
)

// remoteFS carries out a remote operation for the supervisor: through the
// FUSE view (fuseView) or with snapshots and pipes (memfdFS).
type remoteFS interface {
	// open returns an fd to install in the program (close-on-exec here).
	open(ctx context.Context, path string, flags int, mode uint32) (int, error)
	stat(ctx context.Context, path string, follow bool) (unix.Stat_t, error)
	statx(ctx context.Context, path string, follow bool, flags, mask int) (unix.Statx_t, error)
	readlink(ctx context.Context, path string) (string, error)
	unlink(ctx context.Context, path string, dir bool) error
	mkdir(ctx context.Context, path string, mode uint32) error
	rename(ctx context.Context, from, to string, flags uint) error
	// dir tells what a directory the program holds is, given its
	// /proc/<tid>/{cwd,fd/N} link and the link's text: inView when it is
	// in the FUSE view (the kernel resolves what lies below it by itself),
	// or the remote path a snapshot stands for.
	dir(link, target string) (inView bool, remote string)
	close()
}

// supervisor answers the seccomp notifications of the program and its
// children: their socket calls (hostnet.go) and, with WithFiles, their
// file calls. It must outlive all of them: once the listener is closed,
// every filtered call fails with ENOSYS.
type supervisor struct {
	listener int
	calls    map[int]sysCall
	net      *hostNet
	filter   Classifier // nil without WithFiles, and then so are remote, pinned and skip
	remote   remoteFS
	fs       FileSystem      // for the calls no file descriptor shows: xattrs, statfs
	pinned   map[string]bool // paths that always stay local
	skip     func(exe string) bool
	log      *slog.Logger

	unixRelay UnixRelay // nil without WithUnixStreams
	peers     peerNames // the sockets unixRelay connected, for getpeername

	// cache holds classifications of absolute paths (the rules are pure
	// functions of the path): a hit costs 0.1 µs, a regex pass 4-14 µs.
	// Only the receiving loop uses it.
	cache map[cacheKey]classified

	noSend atomic.Bool // the kernel lacks SECCOMP_ADDFD_FLAG_SEND (before 5.14)

	tracer tracer // runs fchdir in a thread that chdirs into the view (tracer.go)

	stopFD int // eventfd: stop the loop
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// libPath matches the shared objects the dynamic loader maps: they stay
// local whatever the fs rules say, or the program could not start.
var libPath = regexp.MustCompile(`^/(usr/)?(local/)?lib(32|64|x32)?/.*\.so(\.[0-9]+)*$`)

// pinnedPaths are the files that stay local whatever the rules say: the
// program's executable and its ELF interpreter, the loader's cache, and
// the files the sandbox replaced (resolv.conf, hostname: the sandbox's
// version already is the target's view), each also through symlinks.
func pinnedPaths(spec Spec, binds []bindMount) map[string]bool {
	pinned := map[string]bool{"/etc/ld.so.cache": true, "/etc/ld.so.preload": true}
	add := func(p string) {
		if p == "" {
			return
		}
		if !filepath.IsAbs(p) {
			dir := spec.Dir
			if dir == "" {
				dir, _ = os.Getwd()
			}
			p = filepath.Join(dir, p)
		}
		pinned[filepath.Clean(p)] = true
		if real, err := filepath.EvalSymlinks(p); err == nil {
			pinned[real] = true
		}
	}
	for _, b := range binds {
		add(b.Target)
	}
	exe := spec.Path
	if !strings.Contains(exe, "/") {
		exe, _ = lookPath(spec.Path, spec.Env)
	}
	add(exe)
	if f, err := elf.Open(exe); err == nil {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				b := make([]byte, p.Filesz)
				if _, err := p.ReadAt(b, 0); err == nil {
					add(strings.TrimRight(string(b), "\x00"))
				}
			}
		}
		f.Close()
	}
	return pinned
}

// supervisorConfig is what the supervisor serves: files is nil without
// WithFiles (remote and pinned then too).
type supervisorConfig struct {
	files     *Files
	remote    remoteFS
	pinned    map[string]bool
	onListen  func(Listener)
	peers     PeerFunc
	connect   ConnectCheck
	unixRelay UnixRelay
	log       *slog.Logger
}

func newSupervisor(listener int, cfg supervisorConfig) (*supervisor, error) {
	hn, err := newHostNet(listener, cfg.onListen)
	if err != nil {
		// The program runs, with the sandbox's own loopback.
		cfg.log.Warn("the program's loopback is the sandbox's own, not this machine's", "err", err)
	}
	stopFD, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &supervisor{
		listener:  listener,
		net:       hn,
		log:       cfg.log,
		unixRelay: cfg.unixRelay,
		stopFD:    stopFD,
		cache:     map[cacheKey]classified{},
		ctx:       ctx,
		cancel:    cancel,
	}
	hn.s = s
	hn.connect = cfg.connect
	if cfg.peers != nil {
		hn.peers = &peerState{fn: cfg.peers}
	}
	if f := cfg.files; f != nil {
		s.calls = interceptedSyscalls(true, f.RemoteWrites, cfg.peers != nil, s.unixRelay != nil)
		s.filter, s.remote, s.fs, s.pinned, s.skip = f.Filter, cfg.remote, f.FS, cfg.pinned, f.Skip
	} else {
		s.calls = interceptedSyscalls(false, false, cfg.peers != nil, s.unixRelay != nil)
	}
	log := cfg.log
	// Linux 6.6: the program's thread and ours hand over on one CPU rather
	// than waking each other across CPUs.
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(listener), unix.SECCOMP_IOCTL_NOTIF_SET_FLAGS,
		unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP); errno != 0 {
		log.Debug("seccomp: no synchronous wake-up", "err", errno)
	}
	s.wg.Add(1)
	go s.loop()
	return s, nil
}

// stop ends the loop, waits for the calls being handled and closes the
// listener. Call it once the program and its children are gone.
func (s *supervisor) stop() {
	var one [8]byte
	one[0] = 1
	unix.Write(s.stopFD, one[:])
	s.cancel()
	s.wg.Wait()
	unix.Close(s.stopFD)
	unix.Close(s.listener)
	s.tracer.stop()
	if s.remote != nil {
		s.remote.close()
	}
}

func (s *supervisor) loop() {
	defer s.wg.Done()
	fds := []unix.PollFd{{Fd: int32(s.listener), Events: unix.POLLIN}, {Fd: int32(s.stopFD), Events: unix.POLLIN}}
	var n seccompNotif
	for {
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			s.log.Error("polling the seccomp listener", "err", err)
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			if fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0 {
				return // every process under the filter has exited
			}
			continue
		}
		if err := notifRecv(s.listener, &n); err != nil {
			if err == unix.ENOENT || err == unix.EINTR {
				continue // the thread was interrupted or died meanwhile
			}
			s.log.Error("receiving a seccomp notification", "err", err)
			return
		}
		s.handle(n)
	}
}

type cacheKey struct {
	path  string
	write bool
}

type classified struct {
	action fsfilter.Action
	path   string
}

const cacheSize = 4096

// Answers.

func (s *supervisor) cont(id uint64) {
	s.send(&seccompNotifResp{ID: id, Flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE})
}

func (s *supervisor) reply(id uint64, val int64, errno syscall.Errno) {
	s.send(&seccompNotifResp{ID: id, Val: val, Error: -int32(errno)})
}

func (s *supervisor) send(r *seccompNotifResp) {
	if err := notifSend(s.listener, r); err != nil {
		s.log.Debug("answering a seccomp notification", "err", err)
	}
}

// addFD installs fd in the program as the result of the call.
func (s *supervisor) addFD(id uint64, fd int, cloexec bool) {
	if !s.noSend.Load() {
		_, err := notifAddFD(s.listener, id, fd, cloexec, true)
		if err != unix.EINVAL {
			if err != nil && err != unix.ENOENT { // ENOENT: interrupted, the call restarts
				s.reply(id, 0, errnoOf(err))
			}
			return
		}
		s.noSend.Store(true)
	}
	newfd, err := notifAddFD(s.listener, id, fd, cloexec, false)
	if err != nil {
		if err != unix.ENOENT {
			s.reply(id, 0, errnoOf(err))
		}
		return
	}
	s.reply(id, int64(newfd), 0)
}

// async runs a remote operation off the receiving loop.
func (s *supervisor) async(fn func(ctx context.Context)) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
		defer cancel()
		fn(ctx)
	}()
}

// Paths.

func (s *supervisor) isPinned(p string) bool {
	for _, pre := range [...]string{"/proc", "/sys", "/dev"} {
		if strings.HasPrefix(p, pre) && (len(p) == len(pre) || p[len(pre)] == '/') {
			return true
		}
	}
	return s.pinned[p] || libPath.MatchString(p)
}

// resolve makes the path argument absolute. ok is false when the kernel
// should resolve it itself: an empty path (AT_EMPTY_PATH), a path below a
// directory of the FUSE view, or one whose base cannot be read. snapshot
// is set when the base is a directory snapshot: the path is remote.
func (s *supervisor) resolve(tid int, dirfd uint64, p string) (abs string, snapshot, ok bool) {
	if p == "" {
		return "", false, false
	}
	if p[0] == '/' {
		return path.Clean(p), false, true
	}
	link := "/proc/" + strconv.Itoa(tid) + "/cwd"
	if int32(dirfd) != unix.AT_FDCWD {
		link = "/proc/" + strconv.Itoa(tid) + "/fd/" + strconv.Itoa(int(int32(dirfd)))
	}
	target, err := os.Readlink(link)
	if err != nil || !strings.HasPrefix(target, "/") {
		return "", false, false
	}
	inView, remote := s.remote.dir(link, target)
	switch {
	case inView:
		return "", false, false
	case remote != "":
		return path.Join(remote, p), true, true
	}
	return path.Join(target, p), false, true
}

// where reads, resolves and classifies the path argument at addr. It
// answers the call itself unless the path goes remote, in which case it
// returns the remote path and true.
func (s *supervisor) where(n *seccompNotif, dirfd, addr uint64, write bool) (string, bool) {
	p, err := readPath(int(n.Pid), addr)
	if err != nil {
		s.cont(n.ID) // the kernel reports EFAULT or ENAMETOOLONG itself
		return "", false
	}
	return s.whereAt(n, dirfd, p, write)
}

// whereAt is where for a path already read.
func (s *supervisor) whereAt(n *seccompNotif, dirfd uint64, p string, write bool) (string, bool) {
	tid := int(n.Pid)
	// If the thread was interrupted or died (and its id was reused) since
	// the notification, the path read is not its: continuing or failing
	// is harmless (the answer goes nowhere), acting remotely is not.
	action, rpath := s.classify(tid, dirfd, p, write)
	switch action {
	case fsfilter.Remote:
		if !notifValid(s.listener, n.ID) {
			return "", false
		}
		return rpath, true
	case fsfilter.NotFound:
		s.reply(n.ID, 0, unix.ENOENT)
	default:
		s.cont(n.ID)
	}
	return "", false
}

func (s *supervisor) classify(tid int, dirfd uint64, p string, write bool) (fsfilter.Action, string) {
	abs, snapshot, ok := s.resolve(tid, dirfd, p)
	if !ok {
		return fsfilter.Local, abs
	}
	key := cacheKey{abs, write}
	c, hit := s.cache[key]
	if !hit {
		c.action, c.path = fsfilter.Local, abs
		if !s.isPinned(abs) {
			c.action, c.path = s.filter.Classify(abs, write)
		}
		if len(s.cache) >= cacheSize {
			clear(s.cache)
		}
		s.cache[key] = c
	}
	action, rpath := c.action, c.path
	if snapshot && action == fsfilter.Local {
		action = fsfilter.Remote // below a remote directory the program holds
	}
	return action, rpath
}

// handle answers one notification: local paths continue in the kernel
// right here; remote operations run on their own goroutine.
func (s *supervisor) handle(n seccompNotif) {
	c, ok := s.calls[int(n.Data.Nr)]
	if !ok {
		s.cont(n.ID)
		return
	}
	a := n.Data.Args
	// The target's unix sockets are a matter of paths, not of network
	// namespaces: they do not need hostNet.
	switch {
	case c.kind == sysConnect && s.unixRelay != nil && s.unixConnect(&n, a):
		return
	case c.kind == sysPeername && s.unixRelay != nil && s.unixPeername(&n, a):
		return
	}
	switch c.kind {
	case sysBind, sysConnect, sysSendto, sysListen, sysAccept, sysPeername:
		if s.net.off || (c.kind == sysAccept || c.kind == sysPeername) && s.net.peers == nil {
			s.cont(n.ID)
			return
		}
	}
	switch c.kind {
	case sysBind:
		s.net.bind(&n, a)
		return
	case sysConnect:
		s.net.send(&n, int(int32(a[0])), a[1], a[2], true)
		return
	case sysSendto:
		s.net.send(&n, int(int32(a[0])), a[4], a[5], false)
		return
	case sysListen:
		s.net.listen(&n, a)
		return
	case sysAccept:
		if c.args != nil {
			a = c.args(a)
		}
		s.net.accept(&n, int(int32(a[0])), a[1], a[2], int(int32(a[3])))
		return
	case sysPeername:
		s.net.getpeername(&n, int(int32(a[0])), a[1], a[2])
		return
	}
	if c.args != nil {
		a = c.args(a)
	}
	tid := int(n.Pid)
	var openPath string // an open's path, read once for both of its uses
	if c.kind == sysOpen {
		p, err := readPath(tid, a[1])
		if err != nil {
			s.cont(n.ID) // the kernel reports EFAULT or ENAMETOOLONG itself
			return
		}
		// The socket tables are this machine's for every program, skipped
		// ones included: they are not a matter of the fs rules.
		if s.net.socketTable(&n, p, int(int32(a[2]))) {
			return
		}
		openPath = p
	}
	if s.filter == nil {
		s.cont(n.ID) // no file layer: every other open is the kernel's
		return
	}
	if s.skip != nil {
		// A skipped program's calls stay local. Its executable is read per
		// call (a few µs): a thread id may exec another program any time.
		if exe, err := os.Readlink("/proc/" + strconv.Itoa(tid) + "/exe"); err == nil && s.skip(exe) {
			s.cont(n.ID)
			return
		}
	}
	switch c.kind {
	case sysOpen:
		s.open(&n, a[0], openPath, int(int32(a[2])), uint32(a[3]))
	case sysOpenat2:
		var how unix.OpenHow
		if a[3] < uint64(unsafe.Sizeof(how)) {
			s.cont(n.ID)
			return
		}
		if _, err := readMem(tid, a[2], bytesOf(&how)); err != nil || how.Resolve != 0 {
			// RESOLVE_* restrict the lookup to a directory the program
			// holds: the kernel keeps those semantics.
			s.cont(n.ID)
			return
		}
		p, err := readPath(tid, a[1])
		if err != nil {
			s.cont(n.ID)
			return
		}
		s.open(&n, a[0], p, int(how.Flags), uint32(how.Mode))
	case sysStat:
		flags := int(a[3])
		rpath, ok := s.where(&n, a[0], a[1], false)
		if !ok {
			return
		}
		s.async(func(ctx context.Context) {
			st, err := s.remote.stat(ctx, rpath, flags&unix.AT_SYMLINK_NOFOLLOW == 0)
			s.replyStruct(&n, bytesOf(&st), a[2], err)
		})
	case sysStatx:
		flags, mask := int(a[2]), int(a[3])
		rpath, ok := s.where(&n, a[0], a[1], false)
		if !ok {
			return
		}
		s.async(func(ctx context.Context) {
			stx, err := s.remote.statx(ctx, rpath, flags&unix.AT_SYMLINK_NOFOLLOW == 0, flags, mask)
			s.replyStruct(&n, bytesOf(&stx), a[4], err)
		})
	case sysAccess:
		// The target's agent answers: it is who opens the target's
		// files, so access says yes where the program's open succeeds.
		// A bad mode or flag is the kernel's EINVAL.
		mode, flags := uint32(a[2]), int(a[3])
		if mode&^uint32(unix.R_OK|unix.W_OK|unix.X_OK) != 0 || flags&^(unix.AT_EACCESS|unix.AT_SYMLINK_NOFOLLOW|unix.AT_EMPTY_PATH) != 0 {
			s.cont(n.ID)
			return
		}
		rpath, ok := s.where(&n, a[0], a[1], false)
		if !ok {
			return
		}
		s.async(func(ctx context.Context) {
			err := s.fs.Access(ctx, rpath, mode, flags&unix.AT_SYMLINK_NOFOLLOW == 0)
			s.reply(n.ID, 0, errnoOrZero(err))
		})
	case sysReadlink:
		buf, size := a[2], int(int32(a[3]))
		rpath, ok := s.where(&n, a[0], a[1], false)
		if !ok {
			return
		}
		if size <= 0 {
			s.reply(n.ID, 0, unix.EINVAL)
			return
		}
		s.async(func(ctx context.Context) {
			target, err := s.remote.readlink(ctx, rpath)
			if err != nil {
				s.reply(n.ID, 0, errnoOf(err))
				return
			}
			b := []byte(target)[:min(len(target), size)]
			if err := writeMem(tid, buf, b); err != nil {
				s.reply(n.ID, 0, unix.EFAULT)
				return
			}
			s.reply(n.ID, int64(len(b)), 0)
		})
	case sysUnlink:
		dir := int(a[2])&unix.AT_REMOVEDIR != 0
		rpath, ok := s.where(&n, a[0], a[1], true)
		if !ok {
			return
		}
		s.async(func(ctx context.Context) {
			s.reply(n.ID, 0, errnoOrZero(s.remote.unlink(ctx, rpath, dir)))
		})
	case sysMkdir:
		mode := uint32(a[2])
		rpath, ok := s.where(&n, a[0], a[1], true)
		if !ok {
			return
		}
		s.async(func(ctx context.Context) {
			err := s.remote.mkdir(ctx, rpath, mode&0o7777&^threadUmask(tid))
			s.reply(n.ID, 0, errnoOrZero(err))
		})
	case sysRename:
		s.rename(&n, a)
	case sysGetxattr, sysListxattr:
		s.xattr(&n, c.kind == sysListxattr, a)
	case sysChmod, sysChown, sysUtimens, sysUtimes, sysUtime, sysTruncate, sysSymlink:
		s.change(&n, c.kind, a)
	case sysChdir:
		s.chdir(&n, a)
	case sysGetcwd:
		s.getcwd(&n, a)
	case sysLink:
		s.link(&n, a)
	case sysStatfs:
		rpath, ok := s.where(&n, a[0], a[1], false)
		if !ok {
			return
		}
		s.async(func(ctx context.Context) {
			info, err := s.fs.Statfs(ctx, rpath)
			var st unix.Statfs_t
			if err == nil {
				st = unix.Statfs_t{Type: info.Type, Bsize: info.Bsize, Blocks: info.Blocks, Bfree: info.Bfree,
					Bavail: info.Bavail, Files: info.Files, Ffree: info.Ffree, Fsid: unix.Fsid{Val: info.Fsid},
					Namelen: info.Namelen, Frsize: info.Frsize, Flags: info.Flags}
			}
			s.replyStruct(&n, bytesOf(&st), a[2], err)
		})
	default:
		s.cont(n.ID)
	}
}

func (s *supervisor) open(n *seccompNotif, dirfd uint64, p string, flags int, mode uint32) {
	acc := flags & unix.O_ACCMODE
	write := acc != unix.O_RDONLY || flags&(unix.O_CREAT|unix.O_TRUNC|unix.O_APPEND) != 0 ||
		flags&unix.O_TMPFILE == unix.O_TMPFILE
	rpath, ok := s.whereAt(n, dirfd, p, write)
	if !ok {
		return
	}
	id, tid := n.ID, int(n.Pid)
	s.async(func(ctx context.Context) {
		if flags&unix.O_CREAT != 0 || flags&unix.O_TMPFILE == unix.O_TMPFILE {
			mode &^= threadUmask(tid)
		}
		fd, err := s.remote.open(ctx, rpath, flags&^unix.O_CLOEXEC, mode)
		s.log.Debug("remote open", "path", rpath, "flags", flags, "err", err)
		if err != nil {
			s.reply(id, 0, errnoOf(err))
			return
		}
		s.addFD(id, fd, flags&unix.O_CLOEXEC != 0)
		unix.Close(fd)
	})
}

// rename and link: both paths remote goes to the target, both local
// stays in the kernel, one of each is EXDEV (mv then copies, as across
// file systems).
func (s *supervisor) rename(n *seccompNotif, a [6]uint64) {
	flags := uint(a[4])
	s.pathPair(n, a, false, func(ctx context.Context, from, to string) error {
		return s.remote.rename(ctx, from, to, flags)
	})
}

func (s *supervisor) link(n *seccompNotif, a [6]uint64) {
	// linkat(fd, "", ..., AT_EMPTY_PATH) links an open file: the kernel's.
	s.pathPair(n, a, int(a[4])&unix.AT_EMPTY_PATH != 0, s.fs.Link)
}

// pathPair runs op for a call whose arguments are (olddirfd, oldpath,
// newdirfd, newpath, ...), unless local says the kernel does it.
func (s *supervisor) pathPair(n *seccompNotif, a [6]uint64, local bool, op func(ctx context.Context, from, to string) error) {
	tid := int(n.Pid)
	from, err1 := readPath(tid, a[1])
	to, err2 := readPath(tid, a[3])
	if err1 != nil || err2 != nil || from == "" || local {
		s.cont(n.ID)
		return
	}
	fa, fp := s.classify(tid, a[0], from, true)
	ta, tp := s.classify(tid, a[2], to, true)
	switch {
	case fa == fsfilter.NotFound || ta == fsfilter.NotFound:
		s.reply(n.ID, 0, unix.ENOENT)
	case fa == fsfilter.Local && ta == fsfilter.Local:
		s.cont(n.ID)
	case fa != ta:
		s.reply(n.ID, 0, unix.EXDEV)
	case !notifValid(s.listener, n.ID):
	default:
		s.async(func(ctx context.Context) {
			s.reply(n.ID, 0, errnoOrZero(op(ctx, fp, tp)))
		})
	}
}

// xattr answers getxattr/lgetxattr (the arguments in the order dirfd,
// path, name, value, size, flags) or listxattr/llistxattr (dirfd, path,
// list, size, flags) for a remote path, with their contract: size 0 asks
// for the length, a smaller buffer is ERANGE.
func (s *supervisor) xattr(n *seccompNotif, list bool, a [6]uint64) {
	tid := int(n.Pid)
	var name string
	buf, size, flags := a[3], a[4], a[5]
	if list {
		buf, size, flags = a[2], a[3], a[4]
	} else {
		var err error
		if name, err = readPath(tid, a[2]); err != nil {
			s.cont(n.ID)
			return
		}
	}
	follow := int(flags)&unix.AT_SYMLINK_NOFOLLOW == 0
	rpath, ok := s.where(n, a[0], a[1], false)
	if !ok {
		return
	}
	s.async(func(ctx context.Context) {
		var v []byte
		var err error
		if list {
			var names []string
			names, err = s.fs.Listxattr(ctx, rpath, follow)
			for _, nm := range names {
				v = append(append(v, nm...), 0)
			}
		} else {
			v, err = s.fs.Getxattr(ctx, rpath, name, follow)
		}
		switch {
		case err != nil:
			s.reply(n.ID, 0, errnoOf(err))
		case size == 0:
			s.reply(n.ID, int64(len(v)), 0)
		case uint64(len(v)) > size:
			s.reply(n.ID, 0, unix.ERANGE)
		case !notifValid(s.listener, n.ID):
		case writeMem(tid, buf, v) != nil:
			s.reply(n.ID, 0, unix.EFAULT)
		default:
			s.reply(n.ID, int64(len(v)), 0)
		}
	})
}

// change runs chmod, chown, utimensat, truncate or symlink on a remote
// path (the arguments in their *at order). An empty or NULL path is the
// fd form (fchownat(fd, "", AT_EMPTY_PATH), futimens): the kernel does
// that, through the view for a remote fd.
func (s *supervisor) change(n *seccompNotif, kind sysKind, a [6]uint64) {
	tid := int(n.Pid)
	dirfd, pathArg := a[0], a[1]
	var linkTarget string
	if kind == sysSymlink {
		t, err := readPath(tid, a[0])
		if err != nil {
			s.cont(n.ID)
			return
		}
		linkTarget, dirfd, pathArg = t, a[1], a[2]
	}
	p, err := readPath(tid, pathArg)
	if pathArg == 0 || err != nil || p == "" {
		s.cont(n.ID)
		return
	}
	var attr protocol.SetAttr
	follow := true
	switch kind {
	case sysChmod:
		mode := uint32(a[2]) & 0o7777
		attr.Mode, follow = &mode, int(a[3])&unix.AT_SYMLINK_NOFOLLOW == 0
	case sysChown:
		// -1 (as a 32-bit id) leaves the owner or the group as it is.
		if uid := uint32(a[2]); uid != ^uint32(0) {
			attr.UID = &uid
		}
		if gid := uint32(a[3]); gid != ^uint32(0) {
			attr.GID = &gid
		}
		follow = int(a[4])&unix.AT_SYMLINK_NOFOLLOW == 0
	case sysUtimens:
		now := int64(protocol.TimeNow)
		attr.Atime, attr.Mtime = &now, &now // NULL times: both now
		if a[2] != 0 {
			var ts [2]unix.Timespec
			if _, err := readMem(tid, a[2], bytesOf(&ts)); err != nil {
				s.reply(n.ID, 0, unix.EFAULT)
				return
			}
			attr.Atime, attr.Mtime = timeArg(ts[0]), timeArg(ts[1])
		}
		follow = int(a[3])&unix.AT_SYMLINK_NOFOLLOW == 0
	case sysUtimes, sysUtime:
		// Whole seconds (utime's struct utimbuf) or microseconds (utimes,
		// futimesat: struct timeval).
		now := int64(protocol.TimeNow)
		attr.Atime, attr.Mtime = &now, &now
		if a[2] != 0 {
			var t [2]unix.Timeval
			b := bytesOf(&t)
			if kind == sysUtime {
				b = b[:16] // struct utimbuf: two longs, in t[0]
			}
			if _, err := readMem(tid, a[2], b); err != nil {
				s.reply(n.ID, 0, unix.EFAULT)
				return
			}
			at, mt := t[0].Nano(), t[1].Nano()
			if kind == sysUtime {
				at, mt = t[0].Sec*1e9, t[0].Usec*1e9 // actime, modtime
			}
			attr.Atime, attr.Mtime = &at, &mt
		}
	}
	rpath, ok := s.whereAt(n, dirfd, p, true)
	if !ok {
		return
	}
	size := int64(a[2])
	s.async(func(ctx context.Context) {
		var err error
		switch kind {
		case sysTruncate:
			err = s.fs.Truncate(ctx, rpath, size)
		case sysSymlink:
			err = s.fs.Symlink(ctx, linkTarget, rpath)
		default:
			err = s.fs.Setattr(ctx, rpath, follow, attr)
		}
		s.reply(n.ID, 0, errnoOrZero(err))
	})
}

// chdir into a remote directory: the thread fchdirs to its fd in the
// view (tracer.go). A directory of the view itself (a relative chdir
// from there, `cd ..`) is the kernel's.
func (s *supervisor) chdir(n *seccompNotif, a [6]uint64) {
	rpath, ok := s.where(n, a[0], a[1], false)
	if !ok {
		return
	}
	if _, isView := s.remote.(*fuseView); !isView {
		// A snapshot directory would let relative opens read empty local
		// files: fail rather than pretend.
		s.log.Warn("chdir into the target's directory needs the FUSE view (/dev/fuse); the program gets EOPNOTSUPP", "path", rpath)
		s.reply(n.ID, 0, unix.EOPNOTSUPP)
		return
	}
	s.async(func(ctx context.Context) {
		fd, err := s.remote.open(ctx, rpath, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			s.reply(n.ID, 0, errnoOf(err))
			return
		}
		defer unix.Close(fd)
		if err := s.chdirTo(n, fd); err != nil {
			s.log.Warn("chdir into the target's directory failed", "path", rpath, "err", err)
		}
	})
}

// getcwd answers for a working directory in the view, whose path there is
// the target's path (the kernel would say "(unreachable)/app", which libc
// and Go take for an error); any other is the kernel's.
func (s *supervisor) getcwd(n *seccompNotif, a [6]uint64) {
	tid := int(n.Pid)
	link := "/proc/" + strconv.Itoa(tid) + "/cwd"
	target, err := os.Readlink(link)
	if err != nil || !strings.HasPrefix(target, "/") {
		s.cont(n.ID)
		return
	}
	if inView, _ := s.remote.dir(link, target); !inView {
		s.cont(n.ID)
		return
	}
	b := append([]byte(target), 0)
	switch {
	case uint64(len(b)) > a[1]:
		s.reply(n.ID, 0, unix.ERANGE)
	case !notifValid(s.listener, n.ID):
	case writeMem(tid, a[0], b) != nil:
		s.reply(n.ID, 0, unix.EFAULT)
	default:
		s.reply(n.ID, int64(len(b)), 0)
	}
}

// timeArg is one utimensat time as SetAttr wants it: nil for UTIME_OMIT.
func timeArg(ts unix.Timespec) *int64 {
	var v int64
	switch ts.Nsec {
	case unix.UTIME_OMIT:
		return nil
	case unix.UTIME_NOW:
		v = protocol.TimeNow
	default:
		v = ts.Nano()
	}
	return &v
}

// replyStruct writes a stat result into the program and answers 0.
func (s *supervisor) replyStruct(n *seccompNotif, b []byte, addr uint64, err error) {
	if err != nil {
		s.reply(n.ID, 0, errnoOf(err))
		return
	}
	// The thread is still blocked in this very call (or the id is no
	// longer valid and the write does not matter).
	if !notifValid(s.listener, n.ID) {
		return
	}
	if werr := writeMem(int(n.Pid), addr, b); werr != nil {
		s.reply(n.ID, 0, unix.EFAULT)
		return
	}
	s.reply(n.ID, 0, 0)
}
