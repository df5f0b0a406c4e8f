package goshim

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// forwardedSignals are the signals a user or a test runner sends to mirrord
// that are meant for the program: interrupts, termination, the SIGQUIT
// `go test -timeout` uses for goroutine dumps, and the user-defined ones.
var forwardedSignals = []os.Signal{
	syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT,
	syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2,
}

// ForwardSignals relays forwardedSignals received by mirrord to the
// program until ctx is done, the program exits, or stop is called. The
// program is in its own process group, so a signal sent to mirrord's group
// (a terminal's Ctrl-C when the program is not in the foreground) reaches
// it exactly once. While forwarding, these signals no longer have their
// default effect on mirrord: it lives until the program exits.
func (s *Sandbox) ForwardSignals(ctx context.Context) (stop func()) {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, forwardedSignals...)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer signal.Stop(ch)
		for {
			select {
			case sig := <-ch:
				_ = s.Signal(sig) // fails only once the program is gone
			case <-ctx.Done():
				return
			case <-s.done:
				return
			case <-quit:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			wg.Wait()
		})
	}
}
