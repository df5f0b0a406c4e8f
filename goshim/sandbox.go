package goshim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// HelperCommand is the hidden sub-command of the mirrord binary that must
// call HelperMain and exit with its result. Start runs
// `<os.Executable()> goshim-helper`.
const HelperCommand = "goshim-helper"

const (
	// defaultSetupTimeout bounds the helper's setup (namespaces, TUN,
	// netlink, mounts), which takes a few milliseconds; a helper that hangs
	// must not hang mirrord.
	defaultSetupTimeout = 30 * time.Second
	// execTimeout bounds the wait, in Go, for the exec to happen. A
	// successful exec is reported by EOF, so this only matters if the
	// helper is stuck in something like a hung NFS lookup.
	execTimeout = 30 * time.Second
	// stdioWaitDelay bounds how long Wait waits for stdio copying after the
	// program exited, when a caller passed non-*os.File stdio (tests do) and
	// a background child of the program keeps the pipe open.
	stdioWaitDelay = 2 * time.Second
)

// Option configures Start.
type Option func(*options)

type options struct {
	stdin        io.Reader
	stdout       io.Writer
	stderr       io.Writer
	setupTimeout time.Duration
	files        *Files
	onListen     func(Listener)
	peers        PeerFunc
	connectCheck ConnectCheck
	unixRelay    UnixRelay
	log          *slog.Logger
}

// WithLogger sets where the sandbox logs (nothing by default; WithFiles'
// Logger when set).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.log = l }
}

// WithStdio sets the program's standard input, output and error, which are
// otherwise mirrord's own. Like in os/exec, a nil value means the null
// device, and a value that is not an *os.File is served through a pipe.
func WithStdio(stdin io.Reader, stdout, stderr io.Writer) Option {
	return func(o *options) { o.stdin, o.stdout, o.stderr = stdin, stdout, stderr }
}

// WithSetupTimeout bounds how long Start waits for the sandbox to be ready.
func WithSetupTimeout(d time.Duration) Option {
	return func(o *options) { o.setupTimeout = d }
}

// Sandbox is a program waiting to run, or running, in its own namespaces.
// Its methods are safe for concurrent use.
type Sandbox struct {
	cmd    *exec.Cmd
	conn   *net.UnixConn // parent end of the socketpair
	tunFD  int
	tmpDir string
	term   *terminal // non-nil when the program got the terminal's foreground

	// The file layer (WithFiles); nil without it.
	files     *Files
	onListen  func(Listener)
	peers     PeerFunc
	connect   ConnectCheck
	unixRelay UnixRelay
	log       *slog.Logger
	pinned    map[string]bool // paths that stay local whatever the rules
	remote    remoteFS        // set by the handshake
	super     *supervisor     // set by Go

	done     chan struct{} // closed once the program has been reaped
	exitCode int
	waitErr  error

	mu        sync.Mutex
	goSent    bool
	closeOnce sync.Once
}

// Start creates the sandbox for spec and returns once the helper has set it
// up and handed over the TUN fd; the program starts with Go. The caller
// must call Close, which kills the program if it still runs.
//
// The program's environment is exactly spec.Env (nil means empty), so the
// caller decides what of mirrord's environment it inherits.
func Start(spec Spec, opts ...Option) (*Sandbox, error) {
	o := options{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, setupTimeout: defaultSetupTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if err := validateSpec(spec); err != nil {
		return nil, fmt.Errorf("goshim: %w", err)
	}
	if err := validateFiles(o.files); err != nil {
		return nil, fmt.Errorf("goshim: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("goshim: finding the mirrord executable to re-run as helper: %w", err)
	}

	s := &Sandbox{tunFD: -1, done: make(chan struct{}), files: o.files, onListen: o.onListen, peers: o.peers, connect: o.connectCheck, unixRelay: o.unixRelay, log: o.log}
	msg, err := s.prepare(spec)
	if err != nil {
		s.release()
		return nil, fmt.Errorf("goshim: %w", err)
	}
	if s.log == nil && s.files != nil {
		s.log = s.files.Logger
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	// The seccomp filter is there for every program (this machine's
	// loopback, hostnet.go); where the architecture has no table for it,
	// the program runs with the sandbox's own loopback.
	if auditArch != 0 {
		for nr := range interceptedSyscalls(s.files != nil, s.files != nil && s.files.RemoteWrites, s.peers != nil, s.unixRelay != nil) {
			msg.Syscalls = append(msg.Syscalls, nr)
		}
		slices.Sort(msg.Syscalls)
	}
	if s.files != nil {
		msg.Files = &filesSetup{View: !s.files.NoFUSE}
		s.pinned = pinnedPaths(spec, msg.Binds)
	}
	child, err := s.openSocket()
	if err != nil {
		s.release()
		return nil, fmt.Errorf("goshim: %w", err)
	}
	s.term = takeForeground(o.stdin, o.stdout, o.stderr)
	s.cmd = helperCommand(exe, child, o, s.term)
	err = s.launch()
	// The helper has its own copy now; ours would keep the socket open
	// after the helper exits and hide that EOF.
	child.Close()
	if err != nil {
		s.release()
		return nil, startError(err)
	}
	if err := s.handshake(msg, o.setupTimeout); err != nil {
		s.Close()
		return nil, err
	}
	// The bind mounts hold the files now; unlinking them here means nothing
	// is left behind even if mirrord itself is killed.
	s.removeTemp()
	return s, nil
}

func validateFiles(f *Files) error {
	switch {
	case f == nil:
		return nil
	case f.FS == nil || f.Filter == nil:
		return errors.New("Files needs FS and Filter")
	case auditArch == 0:
		return fmt.Errorf("remote files are not supported on %s: %w", runtime.GOARCH, ErrSeccomp)
	}
	return nil
}

func validateSpec(spec Spec) error {
	if spec.Path == "" {
		return errors.New("spec has no program path")
	}
	if spec.MTU < 0 || spec.MTU > 65535 {
		return fmt.Errorf("MTU %d out of range (68-65535, or 0 for %d)", spec.MTU, DefaultMTU)
	}
	return nil
}

// prepare writes the files to bind-mount in the sandbox into a private
// temporary directory and returns the setup message for the helper.
func (s *Sandbox) prepare(spec Spec) (setupMessage, error) {
	msg := setupMessage{Spec: spec}
	if msg.Spec.MTU == 0 {
		msg.Spec.MTU = DefaultMTU
	}
	files := []struct {
		target, content string
		optional        bool
	}{
		{"/etc/resolv.conf", spec.ResolvConf, false},
		{"/etc/hosts", spec.Hosts, false},
		// Some programs read the name from the file rather than uname(2);
		// many systems have no such file, which is fine.
		{"/etc/hostname", hostnameFile(spec.Hostname), true},
	}
	for _, f := range files {
		if f.content == "" {
			continue
		}
		if s.tmpDir == "" {
			dir, err := os.MkdirTemp("", "mirrord-goshim-")
			if err != nil {
				return msg, fmt.Errorf("creating a directory for the sandbox's /etc files: %w", err)
			}
			s.tmpDir = dir
		}
		src := filepath.Join(s.tmpDir, filepath.Base(f.target))
		if err := os.WriteFile(src, []byte(f.content), 0o644); err != nil {
			return msg, fmt.Errorf("writing the sandbox's %s: %w", f.target, err)
		}
		msg.Binds = append(msg.Binds, bindMount{Source: src, Target: f.target, Optional: f.optional})
	}
	return msg, nil
}

func hostnameFile(name string) string {
	if name == "" {
		return ""
	}
	return name + "\n"
}

// openSocket creates the socketpair, keeps the parent end and returns the
// helper's end, which becomes its fd 3.
func (s *Sandbox) openSocket() (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("creating the helper socketpair: %w", err)
	}
	parent := os.NewFile(uintptr(fds[0]), "goshim-parent")
	child := os.NewFile(uintptr(fds[1]), "goshim-helper")
	c, err := net.FileConn(parent) // dups the fd: deadlines need the poller
	parent.Close()
	if err != nil {
		child.Close()
		return nil, fmt.Errorf("wrapping the helper socket: %w", err)
	}
	s.conn = c.(*net.UnixConn)
	return child, nil
}

// helperCommand builds the command that re-runs mirrord as the helper,
// created directly in new user, network, mount and UTS namespaces.
func helperCommand(exe string, sock *os.File, o options, term *terminal) *exec.Cmd {
	uid, gid := os.Getuid(), os.Getgid()
	// Our own ids map to themselves: that is all an unprivileged user may
	// map. Root maps every id to itself, so that files owned by other
	// users (this machine's, and the target's through the view) show
	// their owners, as they do to a program outside the sandbox, rather
	// than the overflow id "nobody", and setgroups works as it does there.
	uidMap := []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
	gidMap := []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
	if uid == 0 {
		uidMap = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: math.MaxUint32}}
		gidMap = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: math.MaxUint32}}
	}
	attr := &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
		UidMappings: uidMap,
		GidMappings: gidMap,
		// Writing gid_map unprivileged requires setgroups to be denied.
		GidMappingsEnableSetgroups: uid == 0,
		// A non-root uid loses all capabilities at exec; ambient ones survive
		// it, so the helper can configure the network and mounts of its
		// namespaces. It clears them before it execs the program.
		AmbientCaps: []uintptr{unix.CAP_NET_ADMIN, unix.CAP_SYS_ADMIN},
		// The program must not outlive mirrord: its network (the TUN fd)
		// dies with mirrord anyway. Tied to the creating thread: see launch.
		Pdeathsig: syscall.SIGKILL,
		// Its own process group, so a terminal's Ctrl-C or a group kill
		// aimed at mirrord is not delivered twice (see ForwardSignals).
		Setpgid: true,
	}
	if term != nil {
		attr.Foreground = true
		attr.Ctty = term.fd
	}
	return &exec.Cmd{
		Path:        exe,
		Args:        []string{exe, HelperCommand},
		Stdin:       o.stdin,
		Stdout:      o.stdout,
		Stderr:      o.stderr,
		ExtraFiles:  []*os.File{sock},
		SysProcAttr: attr,
		WaitDelay:   stdioWaitDelay,
	}
}

// launch starts the helper from a goroutine locked to its OS thread, which
// stays locked until the program exits: the kernel sends Pdeathsig when the
// creating *thread* exits, and the Go runtime may retire an unlocked thread
// at any time, killing the program for no reason.
func (s *Sandbox) launch() error {
	started := make(chan error, 1)
	go s.supervise(started)
	return <-started
}

func (s *Sandbox) supervise(started chan<- error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := s.cmd.Start(); err != nil {
		s.exitCode, s.waitErr = -1, err
		close(s.done)
		started <- err
		return
	}
	started <- nil
	err := s.cmd.Wait()
	s.term.restore()
	s.exitCode, s.waitErr = exitStatus(s.cmd.ProcessState, err)
	close(s.done)
}

// exitStatus converts a wait result to a shell-style exit code.
func exitStatus(ps *os.ProcessState, err error) (int, error) {
	if ps == nil {
		return -1, err
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = nil // a non-zero status is a result, not a failure to wait
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), err
	}
	return ps.ExitCode(), err
}

// startError explains a failure to create the helper, which is almost
// always the kernel refusing the user namespace.
func startError(err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOSPC) ||
		errors.Is(err, syscall.EUSERS) || errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("goshim: creating the sandbox namespaces: %w: %w; %s", err, ErrUserNamespace, userNSHint())
	}
	return fmt.Errorf("goshim: starting the sandbox helper: %w", err)
}

// handshake sends the setup message and waits for the TUN fd.
func (s *Sandbox) handshake(msg setupMessage, timeout time.Duration) error {
	payload, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("goshim: encoding the sandbox spec: %w", err)
	}
	if err := s.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("goshim: %w", err)
	}
	defer s.conn.SetDeadline(time.Time{})
	if _, err := s.conn.Write(encodeFrame(frameSetup, payload)); err != nil {
		return s.helperGone("sending the sandbox spec", err)
	}
	typ, body, fds, err := readFrameFDs(s.conn)
	switch {
	case err != nil:
		return s.helperGone("waiting for the sandbox setup", err)
	case typ == frameError:
		closeFDs(fds)
		return fmt.Errorf("goshim: sandbox setup: %w", decodeError(body))
	case typ != frameTUN || len(fds) == 0:
		closeFDs(fds)
		return fmt.Errorf("goshim: sandbox setup: unexpected %q frame with %d fds", typ, len(fds))
	}
	s.tunFD = fds[0]
	var ready readyMessage
	if len(body) > 0 {
		if err := json.Unmarshal(body, &ready); err != nil {
			closeFDs(fds[1:])
			return fmt.Errorf("goshim: sandbox setup: %w", err)
		}
	}
	if ready.View != (len(fds) == 3) {
		closeFDs(fds[1:])
		return fmt.Errorf("goshim: sandbox setup: %d fds for view=%t", len(fds), ready.View)
	}
	if s.files == nil {
		closeFDs(fds[1:])
		return nil
	}
	return s.startRemote(ready, fds[1:])
}

// startRemote serves the FUSE view the helper made, or prepares the
// fallback when it could not.
func (s *Sandbox) startRemote(ready readyMessage, view []int) error {
	if ready.View {
		v, err := serveView(view[0], view[1], s.files.FS, s.log)
		if err == nil {
			s.remote = v
			s.log.Debug("remote files through the FUSE view")
			return nil
		}
		ready.ViewError = err.Error()
	}
	why := ready.ViewError
	if why != "" {
		s.log.Info("remote files without FUSE (memfd snapshots and pipes)", "reason", why)
	} else {
		why = "the view is off: Files.NoFUSE"
	}
	s.remote = newMemfdFS(s.files.FS, s.files.MemfdLimit, s.log, s.files.Warn, why)
	return nil
}

// helperGone explains a broken conversation: usually the helper died, and
// its exit status (and whatever it printed on stderr) says why.
func (s *Sandbox) helperGone(what string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("goshim: %s: the helper did not answer in time", what)
	}
	select {
	case <-s.done:
		return fmt.Errorf("goshim: %s: the helper exited with status %d before it was ready (its stderr may say why)", what, s.exitCode)
	case <-time.After(time.Second):
		return fmt.Errorf("goshim: %s: %w", what, err)
	}
}

// TunFD returns the TUN device's file descriptor (non-blocking, IFF_NO_PI:
// every read is one raw IP packet), valid until Close. The Sandbox owns it:
// hand it to the netstack's endpoint, but do not close it; Close does.
func (s *Sandbox) TunFD() int { return s.tunFD }

// Pid returns the process id of the program (the helper before Go).
func (s *Sandbox) Pid() int { return s.cmd.Process.Pid }

// Go lets the helper exec the program. It returns once the exec happened,
// or with the helper's error, e.g. exec.ErrNotFound when the program does
// not exist; the helper then exits with 127 (not found) or 126 (not
// executable), which Wait reports. Call Go once, after the netstack serves
// TunFD: the program may use the network from its first instruction.
func (s *Sandbox) Go() error {
	s.mu.Lock()
	already := s.goSent
	s.goSent = true
	s.mu.Unlock()
	if already {
		return errors.New("goshim: Go called twice")
	}
	if _, err := s.conn.Write([]byte{goByte}); err != nil {
		return fmt.Errorf("goshim: starting the program: the helper is gone: %w", err)
	}
	if err := s.conn.SetReadDeadline(time.Now().Add(execTimeout)); err != nil {
		return fmt.Errorf("goshim: %w", err)
	}
	typ, payload, fds, err := readFrameFDs(s.conn)
	if err == nil && typ == frameSeccomp {
		if err := s.startSupervisor(fds); err != nil {
			return err
		}
		typ, payload, fds, err = readFrameFDs(s.conn)
	}
	closeFDs(fds)
	switch {
	case errors.Is(err, io.EOF):
		// The socket is close-on-exec in the helper: EOF means the exec
		// succeeded (or the helper was killed, which Wait reports).
		return nil
	case err != nil:
		return fmt.Errorf("goshim: waiting for the program to start: %w", err)
	case typ == frameError:
		return fmt.Errorf("goshim: %w", decodeError(payload))
	}
	return fmt.Errorf("goshim: waiting for the program to start: unexpected %q frame", typ)
}

// startSupervisor starts answering the program's file system calls, whose
// seccomp listener the helper sent just before it execs the program.
func (s *Sandbox) startSupervisor(fds []int) error {
	if len(fds) != 1 {
		closeFDs(fds)
		return errors.New("goshim: unexpected seccomp listener from the helper")
	}
	sv, err := newSupervisor(fds[0], supervisorConfig{files: s.files, remote: s.remote, pinned: s.pinned, onListen: s.onListen,
		peers: s.peers, connect: s.connect, unixRelay: s.unixRelay, log: s.log})
	if err != nil {
		unix.Close(fds[0])
		return fmt.Errorf("goshim: starting the seccomp supervisor: %w", err)
	}
	s.mu.Lock()
	s.super = sv
	s.mu.Unlock()
	return nil
}

// Signal sends sig to the program (not to its process group, like kill(1)).
func (s *Sandbox) Signal(sig os.Signal) error {
	select {
	case <-s.done:
		return os.ErrProcessDone
	default:
	}
	return s.cmd.Process.Signal(sig)
}

// Wait waits for the program to exit and returns its exit code: the exit
// status, or 128+n when signal n killed it, as shells report it. err is
// non-nil only if waiting itself failed. Wait may be called many times.
func (s *Sandbox) Wait() (exitCode int, err error) {
	<-s.done
	return s.exitCode, s.waitErr
}

// Close kills the program and its process group if it still runs, waits
// for it, and releases the TUN fd, the socket and temporary files.
func (s *Sandbox) Close() error {
	s.closeOnce.Do(func() {
		s.kill()
		<-s.done
		// Only now: children the program left behind in its process group
		// are killed, and a filtered call without a supervisor would fail
		// with ENOSYS.
		s.mu.Lock()
		sv := s.super
		s.mu.Unlock()
		if sv != nil {
			sv.stop() // closes s.remote too
		} else if s.remote != nil {
			s.remote.close()
		}
		s.release()
	})
	return nil
}

func (s *Sandbox) kill() {
	select {
	case <-s.done:
		return
	default:
	}
	// The program leads its own group (Setpgid), so its children that did
	// not move elsewhere die with it. Until the program is reaped its pid
	// cannot be reused, so the group id still names our group; the window
	// between the check above and this kill is far too short for reuse.
	_ = unix.Kill(-s.cmd.Process.Pid, unix.SIGKILL)
	_ = s.cmd.Process.Kill()
}

// release frees everything but the process. It is safe on a partly
// started Sandbox.
func (s *Sandbox) release() {
	if s.conn != nil {
		s.conn.Close()
	}
	if s.tunFD >= 0 {
		unix.Close(s.tunFD)
		s.tunFD = -1
	}
	s.term.close()
	s.removeTemp()
}

func (s *Sandbox) removeTemp() {
	if s.tmpDir != "" {
		os.RemoveAll(s.tmpDir)
		s.tmpDir = ""
	}
}
