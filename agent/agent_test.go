package agent

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestNoTimeoutsServesUntilStopped: with both timeouts zero (an agent
// started by hand) the agent keeps serving until its context ends. A
// timer armed with zero fired at once on some runs, ending the agent
// before its first client and hanging every session meant for it.
func TestNoTimeoutsServesUntilStopped(t *testing.T) {
	for i := range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan net.Addr, 1)
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Options{Listen: "127.0.0.1:0", Ready: func(a net.Addr) { ready <- a }})
		}()
		var addr net.Addr
		select {
		case addr = <-ready:
		case err := <-done:
			cancel()
			t.Fatalf("run %d: the agent ended before listening: %v", i, err)
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("run %d: the agent ended by itself: %v", i, err)
		case <-time.After(20 * time.Millisecond):
		}
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			cancel()
			t.Fatalf("run %d: the agent does not accept: %v", i, err)
		}
		c.Close()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
}
