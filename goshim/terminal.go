package goshim

import (
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// terminal is mirrord's controlling terminal while the program holds its
// foreground process group.
type terminal struct {
	fd int // our own close-on-exec dup, so the caller may close stdin
}

// takeForeground decides whether the program gets the terminal's
// foreground. The program runs in its own process group, so without this
// it could not read the terminal (SIGTTIN) and Ctrl-C would reach only
// mirrord. It gets the foreground only when stdin is mirrord's controlling
// terminal and mirrord is in the foreground now (never steal the terminal
// from a shell when run with &).
//
// Nor when stdout or stderr is a pipe: then mirrord is part of a pipeline
// whose other members share its job, e.g. `mirrord exec -- app | less`,
// and moving the foreground away from them would stop less the moment it
// reads the keyboard. The program then stays in the background group and
// terminal signals reach it through mirrord (ForwardSignals).
func takeForeground(stdin io.Reader, stdout, stderr io.Writer) *terminal {
	in, ok := stdin.(*os.File)
	if !ok || isPipe(stdout) || isPipe(stderr) {
		return nil
	}
	fd := int(in.Fd())
	// TIOCGPGRP fails with ENOTTY unless fd is our controlling terminal.
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil || pgrp != unix.Getpgrp() {
		return nil
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	return &terminal{fd: dup}
}

// isPipe reports whether w is a pipe or socket.
func isPipe(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return w != nil // served through a pipe by os/exec
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	mode := st.Mode & unix.S_IFMT
	return mode == unix.S_IFIFO || mode == unix.S_IFSOCK
}

// restore gives the foreground back to mirrord's process group once the
// program is gone. mirrord is in the background at that moment, so
// tcsetpgrp would stop it with SIGTTOU unless the signal is ignored or
// blocked. Blocking it on this (locked) thread only, rather than ignoring
// it process-wide, keeps an ignored SIGTTOU from leaking into programs
// mirrord starts meanwhile: ignored signals survive exec.
func (t *terminal) restore() {
	if t == nil {
		return
	}
	var set, old unix.Sigset_t
	bit := uint(unix.SIGTTOU) - 1
	word := uint(unsafe.Sizeof(set.Val[0])) * 8 // 32 or 64 depending on GOARCH
	set.Val[bit/word] |= 1 << (bit % word)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		return
	}
	_ = unix.IoctlSetPointerInt(t.fd, unix.TIOCSPGRP, unix.Getpgrp())
	_ = unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
}

func (t *terminal) close() {
	if t != nil && t.fd >= 0 {
		unix.Close(t.fd)
		t.fd = -1
	}
}
