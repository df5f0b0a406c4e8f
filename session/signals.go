package session

import (
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ForwardSignals relays the signals sigs sent to mirrord to cmd, a child
// in mirrord's process group (the program, or a container runtime's
// client, which proxies them on), until stop is called. A terminal's
// Ctrl-C and Ctrl-\ already reach the whole foreground group, so SIGINT
// and SIGQUIT are relayed only while mirrord is not in the terminal's
// foreground (scripts, test runners, `kill -INT`): the child would get
// them twice otherwise.
func ForwardSignals(cmd *exec.Cmd, sigs ...os.Signal) (stop func()) {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, sigs...)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-ch:
				if (sig == syscall.SIGINT || sig == syscall.SIGQUIT) && inForeground() {
					continue
				}
				if cmd.Process != nil {
					cmd.Process.Signal(sig)
				}
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(ch)
			close(done)
		})
	}
}

// inForeground says whether mirrord's process group holds the terminal
// on its stdin.
func inForeground() bool {
	pgrp, err := unix.IoctlGetInt(int(os.Stdin.Fd()), unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}
