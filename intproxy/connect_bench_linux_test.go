package intproxy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkConnect is the time of one outgoing connection through the
// session (issue 22's connect latency), in parts, for profiling: each
// op connects and closes, as the integration bench's connect measure
// (testdata/connlat.py) does. Agent, proxy and echo server run in this
// process on loopback (a targetless agent dials from this machine).
//
//	direct: no mirrord
//	proxy:  Proxy.DialTCP (the agent dials; a yamux stream would carry the bytes)
//	layer-request: a layer request answered at once (the unix socket's
//	        round trip)
//	layer:  the preload's way: a layer request on the unix socket with the
//	        program's new socket, which the proxy connects to its relay
//	relay:  that last step alone: the program's socket connected to a new
//	        relay listener, and taken from it
func BenchmarkConnect(b *testing.B) {
	dst := echoServer(b)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := connectLocalAgent(b, ctx, `{}`)
	defer p.Close()

	sock := fmt.Sprintf("@mirrord-bench-%d", time.Now().UnixNano())
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go p.ServeLayer(ln, LayerOptions{})
	// layer sends one request line on a connection of its own, with the
	// descriptor fd unless it is -1, as the preload library does, and
	// returns the reply's fields.
	layer := func(req string, fd int) []string {
		lc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			b.Fatal(err)
		}
		defer lc.Close()
		var oob []byte
		if fd >= 0 {
			oob = unix.UnixRights(fd)
		}
		lc.WriteMsgUnix([]byte(req), oob, nil)
		reply, err := bufio.NewReader(lc).ReadString('\n')
		if err != nil {
			b.Fatalf("layer request %q: %v", req, err)
		}
		return strings.Split(strings.TrimSuffix(reply, "\n"), "\t")
	}

	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			c, err := net.Dial("tcp", dst.String())
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
	b.Run("proxy", func(b *testing.B) {
		for b.Loop() {
			c, err := p.DialTCP(ctx, dst)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
	b.Run("layer-request", func(b *testing.B) {
		// The unix socket round trip alone: a request answered at once.
		for b.Loop() {
			if f := layer("P\t127.0.0.1\t1\n", -1); f[0] != "OK" {
				b.Fatalf("layer reply %q", f)
			}
		}
	})
	b.Run("layer", func(b *testing.B) {
		req := fmt.Sprintf("C\ttcp\t%s\t%d\n", dst.Addr(), dst.Port())
		for b.Loop() {
			// The program's socket, as a C program makes it (no Go
			// netpoller), connected by the proxy.
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			if f := layer(req, fd); f[0] != "Y" {
				b.Fatalf("layer reply %q", f)
			}
			unix.Close(fd)
		}
	})
	b.Run("relay", func(b *testing.B) {
		l := &layerServer{p: p}
		for b.Loop() {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := inetSocket(fd, unix.SOCK_STREAM); err != nil {
				b.Fatal(err)
			}
			ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			c, err := l.connectRelay(ln, fd, unix.AF_INET)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
			ln.Close()
			unix.Close(fd)
		}
	})
}
