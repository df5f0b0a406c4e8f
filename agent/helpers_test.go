package agent

import (
	"context"
	"net"
	"testing"

	"github.com/hashicorp/yamux"

	"github.com/mirrord-go/mirrord/protocol"
)

// runAgent runs an agent with opts on a loopback port until the test
// ends, and returns its address and the channel Run's result arrives on.
func runAgent(t *testing.T, opts Options) (addr string, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ready := make(chan net.Addr, 1)
	ended := make(chan error, 1)
	opts.Listen = "127.0.0.1:0"
	opts.Ready = func(a net.Addr) { ready <- a }
	go func() { ended <- Run(ctx, opts) }()
	select {
	case a := <-ready:
		return a.String(), ended
	case err := <-ended:
		t.Fatalf("the agent ended before listening: %v", err)
		return "", nil
	}
}

// dialAgent opens a yamux session to the agent at addr, closed when the
// test ends; hello, when not nil, is said first.
func dialAgent(t *testing.T, addr string, hello *protocol.Hello) *yamux.Session {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s, err := yamux.Client(c, protocol.MuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if hello != nil {
		call(t, s, hello)
	}
	return s
}

// serveEach accepts connections on ln until it closes, handing each to fn
// on a goroutine of its own.
func serveEach(ln net.Listener, fn func(net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go fn(c)
		}
	}()
}
