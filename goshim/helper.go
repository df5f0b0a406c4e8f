package goshim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// helperFD is the helper's end of the socketpair: ExtraFiles[0].
const helperFD = 3

// HelperMain is the body of the hidden `mirrord goshim-helper` command; the
// CLI must exit with its result. It runs inside the new namespaces: it
// sets up the network and mounts, hands the TUN fd to the parent, waits for
// the go byte and then execs the program in place, so it returns only on
// failure. Failures are reported to the parent, which prints them.
func HelperMain() int {
	if os.Getenv(tracerEnv) != "" {
		return TracerMain()
	}
	// Capabilities and the parent-death signal are per thread: they are
	// set on the thread that then calls execve, so pin everything to one.
	runtime.LockOSThread()
	parent := os.Getppid()

	sock, err := openHelperSocket()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mirrord %s: %v (this command is internal to mirrord)\n", HelperCommand, err)
		return 1
	}
	msg, err := readSetup(sock)
	if err != nil {
		return sock.fail(fmt.Errorf("reading the sandbox spec: %w", err), 1)
	}
	tun, err := setupSandbox(msg)
	if err != nil {
		return sock.fail(err, 1)
	}
	var ready readyMessage
	var view []int
	if msg.Files != nil && msg.Files.View {
		dev, root, err := mountView()
		if err != nil {
			ready.ViewError = err.Error()
		} else {
			ready.View = true
			view = []int{dev, root}
		}
	}
	err = sock.sendTUN(tun, ready, view)
	// The program must inherit none of these; the parent holds them now.
	tun.Close()
	for _, fd := range view {
		unix.Close(fd)
	}
	if err != nil {
		return sock.fail(fmt.Errorf("sending the TUN fd: %w", err), 1)
	}
	if !sock.waitGo() {
		return 1 // the parent gave up (or died): nothing to report to
	}
	// The parent-death signal Start asked for was set on the helper's first
	// thread only; new threads start without one, and the Go runtime may
	// run this goroutine on any of them. execve keeps the signal of the
	// thread that calls it, so set it again here, and make sure the parent
	// did not die in between. (Measured: without this, the program
	// survived a SIGKILL of mirrord in about 1 run in 6.)
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return sock.fail(fmt.Errorf("setting the parent-death signal: %w", err), 1)
	}
	if os.Getppid() != parent {
		return 1
	}
	beforeExec := func() error { return nil }
	if len(msg.Syscalls) > 0 {
		beforeExec = func() error { return sock.sendFilter(msg.Syscalls) }
	}
	code, err := execProgram(msg.Spec, beforeExec)
	return sock.fail(err, code)
}

// helperSocket is the helper's end of the socketpair.
type helperSocket struct{ f *os.File }

// openHelperSocket checks that fd 3 is what Start passed, and makes it
// close-on-exec: the parent takes EOF as "the program was exec'd".
func openHelperSocket() (*helperSocket, error) {
	typ, err := unix.GetsockoptInt(helperFD, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("fd %d is not the socket mirrord passes to its helper", helperFD)
	}
	unix.CloseOnExec(helperFD)
	return &helperSocket{f: os.NewFile(helperFD, "goshim-socket")}, nil
}

func readSetup(sock *helperSocket) (setupMessage, error) {
	var msg setupMessage
	typ, payload, err := readFrame(sock.f)
	if err != nil {
		return msg, err
	}
	if typ != frameSetup {
		return msg, fmt.Errorf("unexpected %q frame", typ)
	}
	if err := json.Unmarshal(payload, &msg); err != nil {
		return msg, fmt.Errorf("decoding: %w", err)
	}
	return msg, nil
}

// sendTUN sends the TUN frame with the TUN fd and the view's fds.
func (s *helperSocket) sendTUN(tun *os.File, ready readyMessage, view []int) error {
	payload, err := json.Marshal(ready)
	if err != nil {
		return err
	}
	rc, err := tun.SyscallConn()
	if err != nil {
		return err
	}
	// Control, unlike Fd, leaves the descriptor non-blocking, which the
	// parent's packet loop wants.
	cerr := rc.Control(func(fd uintptr) {
		err = s.sendFDs(frameTUN, payload, append([]int{int(fd)}, view...)...)
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// sendFDs sends a frame with descriptors attached.
func (s *helperSocket) sendFDs(typ byte, payload []byte, fds ...int) error {
	frame := encodeFrame(typ, payload)
	n, err := unix.SendmsgN(helperFD, frame, unix.UnixRights(fds...), nil, 0)
	if err != nil {
		return err
	}
	_, err = s.f.Write(frame[n:]) // a stream socket may take the frame in parts
	return err
}

// sendFilter installs the seccomp filter on this thread (the one that
// execs) and hands its listener to the parent, whose supervisor answers
// from then on. It runs after the program's path lookup (which must see
// the local files) and just before execve.
func (s *helperSocket) sendFilter(nrs []int) error {
	listener, err := installFilter(nrs)
	if err != nil {
		return err
	}
	defer unix.Close(listener)
	if err := s.sendFDs(frameSeccomp, nil, listener); err != nil {
		return fmt.Errorf("sending the seccomp listener: %w", err)
	}
	return nil
}

// waitGo waits for the parent's go byte. EOF means the parent closed the
// sandbox before starting the program.
func (s *helperSocket) waitGo() bool {
	b := make([]byte, 1)
	_, err := io.ReadFull(s.f, b)
	return err == nil && b[0] == goByte
}

// fail reports err to the parent and returns the exit code to use.
func (s *helperSocket) fail(err error, code int) int {
	if _, werr := s.f.Write(encodeError(err)); werr != nil {
		// The parent is gone; stderr is the only place left.
		fmt.Fprintf(os.Stderr, "mirrord: %v\n", err)
	}
	return code
}

// setupSandbox prepares the namespaces and returns the TUN device.
func setupSandbox(msg setupMessage) (*os.File, error) {
	tun, err := setupNetwork(msg.Spec.MTU)
	if err != nil {
		return nil, err
	}
	if err := setupMounts(msg.Binds); err != nil {
		tun.Close()
		return nil, err
	}
	if msg.Spec.Hostname != "" {
		if err := unix.Sethostname([]byte(msg.Spec.Hostname)); err != nil {
			tun.Close()
			return nil, capError("setting the hostname", err)
		}
	}
	return tun, nil
}

// execProgram replaces the helper with the program. It returns only on
// failure, with a shell-style exit code: 127 not found, 126 not executable.
// beforeExec runs last, once nothing is left to do but execve.
func execProgram(spec Spec, beforeExec func() error) (int, error) {
	// The program must not keep the helper's powers over the sandbox (e.g.
	// rerouting around the TUN device); a non-root uid then execs with no
	// capabilities at all.
	if err := dropInheritableCaps(); err != nil {
		return 1, err
	}
	if spec.Dir != "" {
		if err := os.Chdir(spec.Dir); err != nil {
			return 1, fmt.Errorf("changing to the working directory: %w", err)
		}
	}
	path, err := lookPath(spec.Path, spec.Env)
	if err != nil {
		return execExitCode(err), err
	}
	argv := spec.Args
	if len(argv) == 0 {
		argv = []string{spec.Path}
	}
	env := spec.Env
	if env == nil {
		env = []string{}
	}
	if err := beforeExec(); err != nil {
		return 1, err
	}
	err = syscall.Exec(path, argv, env)
	return execExitCode(err), fmt.Errorf("exec %s: %w", path, err)
}

// dropInheritableCaps clears the ambient set and the inheritable set
// (which Go filled to be allowed to raise the ambient one: a binary with
// inheritable file capabilities could still pick them up). Capabilities
// are per thread, and this is the thread that execs.
func dropInheritableCaps() error {
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clearing ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("reading capabilities: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clearing inheritable capabilities: %w", err)
	}
	return nil
}

func execExitCode(err error) int {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, exec.ErrNotFound) {
		return 127
	}
	return 126
}
