package intproxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestDialProgramPeers: the client of a delivery is known from the moment
// the program can accept the connection, under mirrord's end of it, until
// a while after the delivery ended; the layer protocol answers with it.
func TestDialProgramPeers(t *testing.T) {
	p := proxyFor(t, `{"feature": {"network": {"incoming": "mirror"}}}`)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	type seen struct {
		from   netip.AddrPort
		client netip.AddrPort
		ok     bool
	}
	accepted := make(chan seen, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Asked at once, as the preload's accept does.
			from := c.RemoteAddr().(*net.TCPAddr).AddrPort()
			client, ok := p.OriginalPeer(from, port)
			accepted <- seen{from, client, ok}
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// A v4-mapped client (the agent's dual-stack listener) is an IPv4 one.
	client := netip.MustParseAddrPort("[::ffff:10.1.2.3]:4567")
	want := netip.MustParseAddrPort("10.1.2.3:4567")
	c, release, err := p.DialProgram(ctx, dst, client)
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if !s.ok || s.client != want {
		t.Fatalf("at accept: OriginalPeer(%v) = %v, %t; want %v", s.from, s.client, s.ok, want)
	}
	if s.from != c.LocalAddr().(*net.TCPAddr).AddrPort() {
		t.Errorf("the program's peer %v is not mirrord's end %v", s.from, c.LocalAddr())
	}
	l := &layerServer{p: p}
	req := []string{"I", s.from.Addr().String(), fmt.Sprint(s.from.Port()), fmt.Sprint(port)}
	if got, _ := l.handle(ctx, req, -1); got != "A\t10.1.2.3\t4567" {
		t.Errorf("layer I = %q", got)
	}
	if got, _ := l.handle(ctx, []string{"I", "127.0.0.1", "1", fmt.Sprint(port)}, -1); got != "L" {
		t.Errorf("layer I for another connection = %q, want L", got)
	}
	if _, ok := p.OriginalPeer(s.from, port+1); ok {
		t.Error("another port of the program knows the client")
	}

	// Remembered for a while after the delivery ended, then forgotten.
	defer func(d time.Duration) { peerLinger = d }(peerLinger)
	peerLinger = 50 * time.Millisecond
	c.Close()
	release()
	release() // idempotent
	if _, ok := p.OriginalPeer(s.from, port); !ok {
		t.Error("forgotten as soon as the delivery ended")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := p.OriginalPeer(s.from, port); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still remembered long after the delivery ended")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// No client: an ordinary connection, nothing remembered.
	c, release, err = p.DialProgram(ctx, dst, netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer release()
	if s := <-accepted; s.ok {
		t.Errorf("a delivery without a client has one: %v", s.client)
	}

	// Nothing listening: an error, and nothing left behind.
	ln2, _ := net.Listen("tcp4", "127.0.0.1:0")
	closed := netip.AddrPortFrom(dst.Addr(), uint16(ln2.Addr().(*net.TCPAddr).Port))
	ln2.Close()
	if _, _, err := p.DialProgram(ctx, closed, client); err == nil {
		t.Error("dialing a closed port succeeded")
	}
	p.peers.mu.Lock()
	n := len(p.peers.m)
	p.peers.mu.Unlock()
	if n != 0 {
		t.Errorf("%d entries left behind", n)
	}
}

// TestDialProgramIPv6: a delivery to a program listening on the IPv6
// loopback binds mirrord's end there (it panicked: the IPv4 form of the
// IPv6 loopback was taken first).
func TestDialProgramIPv6(t *testing.T) {
	p := proxyFor(t, `{"feature": {"network": {"incoming": "mirror"}}}`)
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dst := netip.AddrPortFrom(netip.IPv6Loopback(), uint16(ln.Addr().(*net.TCPAddr).Port))
	c, release, err := p.DialProgram(ctx, dst, netip.MustParseAddrPort("[fd00::9]:4567"))
	if err != nil {
		t.Fatal(err)
	}
	release()
	c.Close()
}
