package goshim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A remote chdir. The supervisor cannot change another process's working
// directory, nor a system call's arguments, so for chdir into a directory
// of the target it makes the thread itself run fchdir on a view fd:
//
//  1. the tracer (below) seizes the thread and asks it to stop
//     (PTRACE_SEIZE, PTRACE_INTERRUPT); it is still blocked in chdir;
//  2. the supervisor installs the view's directory fd in the thread
//     (SECCOMP_IOCTL_NOTIF_ADDFD, not as the call's result) and answers
//     the chdir 0;
//  3. on its way back to user space the thread stops; the tracer points
//     its program counter back at the system call instruction it just ran
//     with fchdir(fd), then again with close(fd), restores the registers
//     with fchdir's result as chdir's, and detaches.
//
// The tracer is a process of its own (the mirrord binary again, see
// TracerMain) rather than a thread of mirrord: every ptrace stop of a
// traced thread is reported to any wait of the tracer's thread group
// whatever the options ("traditionally we see ptrace'd stopped tasks
// regardless of options", kernel/exit.c), and mirrord waits for the
// program, its child, with os/exec: that wait would take the stop as the
// program's end. The tracer starts on the first remote chdir (≈10 ms) and
// ends with the supervisor.

// tracerEnv selects the tracer in the helper command (HelperMain).
const tracerEnv = "MIRRORD_GOSHIM_TRACER"

// tracerTimeout bounds each exchange with the tracer: a seize, or an
// injection (three system calls of the program).
const tracerTimeout = 5 * time.Second

// tracer is the supervisor's end of the tracer process. One chdir at a
// time goes through it.
type tracer struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	conn *net.UnixConn
	r    *bufio.Reader
}

// start runs the tracer process if it is not running.
func (t *tracer) start() error {
	if t.cmd != nil {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the mirrord executable for the tracer: %w", err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tracer socketpair: %w", err)
	}
	parent, child := os.NewFile(uintptr(fds[0]), "tracer"), os.NewFile(uintptr(fds[1]), "tracer-child")
	defer child.Close()
	c, err := net.FileConn(parent)
	parent.Close()
	if err != nil {
		return fmt.Errorf("tracer socket: %w", err)
	}
	cmd := exec.Command(exe, HelperCommand)
	cmd.Env = []string{tracerEnv + "=1"}
	cmd.ExtraFiles = []*os.File{child}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.Close()
		return fmt.Errorf("starting the tracer: %w", err)
	}
	t.cmd, t.conn, t.r = cmd, c.(*net.UnixConn), bufio.NewReader(c)
	return nil
}

// stop ends the tracer process (it exits on EOF; any thread it still
// traces is detached by its exit).
func (t *tracer) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cmd == nil {
		return
	}
	t.conn.Close()
	done := make(chan struct{})
	go func() { t.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(tracerTimeout):
		t.cmd.Process.Kill()
		<-done
	}
	t.cmd = nil
}

// exchange sends one request line and reads the answer: "OK [N]" or
// "E ERRNO MESSAGE".
func (t *tracer) exchange(req string) (int64, error) {
	t.conn.SetDeadline(time.Now().Add(tracerTimeout))
	line, err := "", error(nil)
	if _, err = t.conn.Write([]byte(req + "\n")); err == nil {
		line, err = t.r.ReadString('\n')
	}
	if err != nil {
		// A tracer that does not answer is ended; the next chdir starts
		// another one.
		t.cmd.Process.Kill()
		t.conn.Close()
		t.cmd.Wait()
		t.cmd = nil
		return 0, fmt.Errorf("tracer: %w", err)
	}
	f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 3)
	if f[0] == "E" && len(f) == 3 {
		n, _ := strconv.Atoi(f[1])
		return 0, fmt.Errorf("%s: %w", f[2], syscall.Errno(n))
	}
	var v int64
	if len(f) > 1 {
		v, _ = strconv.ParseInt(f[1], 10, 64)
	}
	return v, nil
}

// chdir makes thread tid, blocked in the chdir of notification id, change
// to the directory fd (an fd of mirrord's). It answers the notification
// itself and returns an error to log when the chdir failed for a reason
// of mirrord's rather than the program's.
func (s *supervisor) chdirTo(n *seccompNotif, fd int) error {
	t := &s.tracer
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.start(); err != nil {
		s.reply(n.ID, 0, unix.EOPNOTSUPP)
		return err
	}
	if _, err := t.exchange(fmt.Sprintf("S %d", n.Pid)); err != nil {
		// EPERM: a debugger already traces the thread.
		s.reply(n.ID, 0, errnoOf(err))
		return err
	}
	// The thread is seized and will stop on its way back: from here on the
	// tracer must be told to let it go, whatever happens.
	newfd, err := notifAddFD(s.listener, n.ID, fd, true, false)
	if err != nil {
		t.conn.Write([]byte("F -1\n"))
		s.reply(n.ID, 0, errnoOf(err))
		t.exchange("W")
		return fmt.Errorf("installing the directory fd: %w", err)
	}
	if _, err := t.conn.Write([]byte(fmt.Sprintf("F %d\n", newfd))); err != nil {
		s.reply(n.ID, 0, unix.EIO)
		return err
	}
	s.reply(n.ID, 0, 0)
	res, err := t.exchange("W")
	if err != nil {
		return err
	}
	if res != 0 {
		s.log.Debug("remote chdir: fchdir failed in the program", "errno", syscall.Errno(-res))
	}
	return nil
}

// TracerMain is the tracer process (see the top of this file), run by the
// helper command when tracerEnv is set. Requests on fd 3, one line each:
//
//	S TID   seize TID and ask it to stop: "OK" or "E ERRNO WHY"
//	F FD    the thread will stop now; once it has, run fchdir(FD) and
//	        close(FD) in it (FD -1: nothing) and detach
//	W       wait for F's end: "OK RESULT" (fchdir's result, 0 or -errno)
//	        or "E ERRNO WHY"
func TracerMain() int {
	// ptrace requests must all come from the thread that attached.
	runtime.LockOSThread()
	conn := os.NewFile(helperFD, "tracer")
	r := bufio.NewReader(conn)
	reply := func(format string, a ...any) bool {
		_, err := fmt.Fprintf(conn, format+"\n", a...)
		return err == nil
	}
	fail := func(err error) bool {
		return reply("E %d %s", int(errnoOf(err)), strings.ReplaceAll(err.Error(), "\n", " "))
	}
	tid, fd := 0, 0
	var injectErr error
	var result int64
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0 // mirrord is done
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		ok := true
		switch f[0] {
		case "S":
			tid, _ = strconv.Atoi(f[1])
			err := ptrace(unix.PTRACE_SEIZE, tid, 0, unix.PTRACE_O_TRACESYSGOOD)
			if err == nil {
				if err = unix.PtraceInterrupt(tid); err != nil {
					err = fmt.Errorf("PTRACE_INTERRUPT of thread %d: %w", tid, err)
				}
			} else {
				err = fmt.Errorf("PTRACE_SEIZE of thread %d (is a debugger attached?): %w", tid, err)
			}
			if err != nil {
				ok = fail(err)
			} else {
				ok = reply("OK")
			}
		case "F":
			fd, _ = strconv.Atoi(f[1])
			result, injectErr = inject(tid, fd)
		case "W":
			if injectErr != nil {
				ok = fail(injectErr)
			} else {
				ok = reply("OK %d", result)
			}
		}
		if !ok {
			return 0
		}
	}
}

func ptrace(req, tid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// errExited: the thread ended while traced.
var errExited = errors.New("the thread exited")

// tracee is a seized thread; signals it received while stopped for the
// injection are raised again once it is let go.
type tracee struct {
	tid     int
	pending []syscall.Signal
}

// wait waits for the next stop. A signal-delivery stop (a signal the
// thread received meanwhile) is remembered and the signal held back.
func (t *tracee) wait() (unix.WaitStatus, error) {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(t.tid, &ws, unix.WALL, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return ws, fmt.Errorf("waiting for thread %d: %w", t.tid, err)
		case ws.Exited() || ws.Signaled():
			return ws, errExited
		}
		return ws, nil
	}
}

// syscallStop resumes the thread up to its next system call entry or exit.
func (t *tracee) syscallStop() error {
	for {
		if err := unix.PtraceSyscall(t.tid, 0); err != nil {
			return fmt.Errorf("PTRACE_SYSCALL: %w", err)
		}
		ws, err := t.wait()
		if err != nil {
			return err
		}
		switch sig := ws.StopSignal(); {
		case sig == unix.SIGTRAP|0x80:
			return nil
		case ws.TrapCause() == 0 && sig != unix.SIGTRAP:
			t.pending = append(t.pending, sig)
		}
	}
}

// run makes the stopped thread, whose registers at the stop are saved,
// run the system call nr(arg) at the instruction before its program
// counter, and returns the call's result.
func (t *tracee) run(saved *regs, nr int, arg uint64) (int64, error) {
	r := *saved
	setSyscall(&r, nr, arg)
	if err := setRegs(t.tid, &r); err != nil {
		return 0, fmt.Errorf("setting registers: %w", err)
	}
	if err := t.syscallStop(); err != nil { // entry
		return 0, err
	}
	if err := t.syscallStop(); err != nil { // exit
		return 0, err
	}
	if err := getRegs(t.tid, &r); err != nil {
		return 0, fmt.Errorf("reading registers: %w", err)
	}
	return sysResult(&r), nil
}

// inject waits for the seized thread's stop after its chdir returned,
// runs fchdir(fd) and close(fd) in it (fd >= 0), sets chdir's result to
// fchdir's and detaches.
func inject(tid, fd int) (int64, error) {
	t := &tracee{tid: tid}
	for {
		ws, err := t.wait()
		if err != nil {
			return 0, err
		}
		if ws.TrapCause() == unix.PTRACE_EVENT_STOP {
			break // PTRACE_INTERRUPT's stop: chdir has returned
		}
		if sig := ws.StopSignal(); ws.TrapCause() == 0 {
			t.pending = append(t.pending, sig)
		}
		if err := ptrace(unix.PTRACE_CONT, tid, 0, 0); err != nil {
			return 0, fmt.Errorf("PTRACE_CONT: %w", err)
		}
	}
	var saved regs
	err := getRegs(tid, &saved)
	result := -int64(unix.EIO)
	if err == nil && fd >= 0 {
		result, err = t.runFchdir(&saved, fd)
	}
	if err == nil || !errors.Is(err, errExited) {
		// Whatever went wrong, the thread goes on from where chdir
		// returned, with fchdir's result (EIO if it could not run).
		if fd >= 0 {
			setResult(&saved, result)
		}
		if serr := setRegs(tid, &saved); serr != nil && err == nil {
			err = fmt.Errorf("restoring registers: %w", serr)
		}
		if derr := unix.PtraceDetach(tid); derr != nil && err == nil {
			err = fmt.Errorf("PTRACE_DETACH: %w", derr)
		}
		for _, sig := range t.pending {
			unix.Tgkill(threadGroup(tid), tid, sig)
		}
	}
	return result, err
}

// runFchdir checks that the instruction before the program counter is the
// system call instruction, then runs fchdir(fd) and close(fd) there.
func (t *tracee) runFchdir(saved *regs, fd int) (int64, error) {
	insn := make([]byte, len(sysInsn))
	if len(insn) == 0 {
		return 0, fmt.Errorf("no system call injection on %s: %w", runtime.GOARCH, unix.EOPNOTSUPP)
	}
	if _, err := unix.PtracePeekText(t.tid, uintptr(pcOf(saved))-uintptr(len(insn)), insn); err != nil {
		return 0, fmt.Errorf("reading the program's code: %w", err)
	}
	if !bytes.Equal(insn, sysInsn) {
		return 0, fmt.Errorf("chdir was not made with the system call instruction (%x): %w", insn, unix.EOPNOTSUPP)
	}
	result, err := t.run(saved, unix.SYS_FCHDIR, uint64(fd))
	if err != nil {
		return 0, err
	}
	if _, err := t.run(saved, unix.SYS_CLOSE, uint64(fd)); err != nil {
		return 0, err
	}
	return result, nil
}
