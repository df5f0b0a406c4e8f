package intproxy

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/mirrord-go/mirrord/agent"
)

// connectLocalAgent runs a targetless agent in this process on loopback
// until ctx ends, and connects a Proxy configured by the JSON doc to it.
// The caller closes the Proxy.
func connectLocalAgent(tb testing.TB, ctx context.Context, doc string) *Proxy {
	tb.Helper()
	ready := make(chan net.Addr, 1)
	go agent.Run(ctx, agent.Options{Listen: "127.0.0.1:0", Ready: func(a net.Addr) { ready <- a }})
	addr := <-ready
	p, err := Connect(ctx, addr.String(), proxyFor(tb, doc).cfg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// echoServer serves TCP echo on loopback until the test ends and returns
// its address.
func echoServer(tb testing.TB) netip.AddrPort {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}
