package intproxy

import (
	"context"
	"net"
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
