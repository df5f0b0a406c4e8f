package intproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// programSocket makes a socket as the preloaded program would (family
// AF_INET or AF_INET6, a dual-stack one), to pass with a layer request.
func programSocket(t *testing.T, family, typ int) int {
	t.Helper()
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestRouteTCPOtherSocket: the relay of a remote connection goes to the
// program's own socket, which the proxy connects; a connection from any
// other socket that reaches the relay's loopback listener first (another
// local user racing the program) is closed and carries nothing.
func TestRouteTCPOtherSocket(t *testing.T) {
	dst := echoServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := connectLocalAgent(t, ctx, `{}`)
	defer p.Close()

	for _, tc := range []struct {
		name     string
		family   int
		nonblock bool
		bind     unix.Sockaddr // the program's bind before its connect
	}{
		{"ipv4", unix.AF_INET, false, nil},
		{"ipv6 dual-stack", unix.AF_INET6, false, nil},
		{"non-blocking", unix.AF_INET, true, nil},
		{"bound by the program to any address", unix.AF_INET, false, &unix.SockaddrInet4{}},
		{"bound by the program to loopback", unix.AF_INET, false, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}},
		{"ipv6, bound by the program to any address", unix.AF_INET6, false, &unix.SockaddrInet6{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var intruder net.Conn
			l := &layerServer{p: p, relayListening: func(a net.Addr) {
				var err error
				if intruder, err = net.Dial("tcp", a.String()); err != nil {
					t.Errorf("the intruder could not even connect: %v", err)
				}
			}}
			defer l.cleanup()
			fd := programSocket(t, tc.family, unix.SOCK_STREAM)
			if tc.nonblock {
				unix.SetNonblock(fd, true)
			}
			var bound netip.AddrPort
			if tc.bind != nil {
				if err := unix.Bind(fd, tc.bind); err != nil {
					t.Fatal(err)
				}
				sa, _ := unix.Getsockname(fd)
				bound = sockaddrPort(sa)
			}
			if reply := l.routeTCP(ctx, dst, fd); reply != "Y" {
				t.Fatalf("reply %q, want Y", reply)
			}
			if sa, _ := unix.Getsockname(fd); tc.bind != nil && sockaddrPort(sa).Port() != bound.Port() {
				t.Errorf("the program's socket, bound to %v, is now at %v", bound, sockaddrPort(sa))
			}
			if intruder == nil {
				t.Fatal("no intruder")
			}
			defer intruder.Close()
			dup, _ := unix.Dup(fd)
			prog, err := net.FileConn(os.NewFile(uintptr(dup), "program"))
			if err != nil {
				t.Fatal(err)
			}
			defer prog.Close()
			prog.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(prog, "ping")
			buf := make([]byte, 4)
			if _, err := io.ReadFull(prog, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("the program's socket: %q, %v", buf, err)
			}
			intruder.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(intruder, "steal")
			n, err := intruder.Read(buf)
			var ne net.Error
			if n > 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the intruder's connection was not closed: read %q, %v", buf[:n], err)
			}
		})
	}
}

// TestRouteUDPOtherSocket: the loopback socket standing for a remote UDP
// destination takes datagrams from the program's socket only (bound by
// the proxy when the program had not bound it), and sends replies there;
// what another socket sends to it goes nowhere.
func TestRouteUDPOtherSocket(t *testing.T) {
	srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var mu sync.Mutex
	var got []string
	go func() {
		buf := make([]byte, 100)
		for {
			n, from, err := srv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, string(buf[:n]))
			mu.Unlock()
			srv.WriteToUDP(buf[:n], from)
		}
	}()
	dst := netip.MustParseAddrPort(srv.LocalAddr().String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := connectLocalAgent(t, ctx, `{}`)
	defer p.Close()
	l := &layerServer{p: p}

	for _, tc := range []struct {
		name   string
		family int
	}{{"ipv4", unix.AF_INET}, {"ipv6 dual-stack", unix.AF_INET6}} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			fd := programSocket(t, tc.family, unix.SOCK_DGRAM)
			reply := l.routeUDP(ctx, dst, fd)
			f := replyFieldsOf(reply)
			if f[0] != "R" || len(f) != 3 {
				t.Fatalf("reply %q", reply)
			}
			port, _ := strconv.Atoi(f[2])
			relay := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
			intruder, err := net.DialUDP("udp4", nil, relay)
			if err != nil {
				t.Fatal(err)
			}
			defer intruder.Close()
			intruder.Write([]byte("intruder"))

			var to unix.Sockaddr = &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
			if tc.family == unix.AF_INET6 {
				to = &unix.SockaddrInet6{Port: port, Addr: netip.MustParseAddr("::ffff:127.0.0.1").As16()}
			}
			if err := unix.Sendto(fd, []byte("ping"), 0, to); err != nil {
				t.Fatal(err)
			}
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})
			buf := make([]byte, 100)
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || string(buf[:n]) != "ping" {
				t.Fatalf("the program's socket got %q, %v", buf[:max(n, 0)], err)
			}
			intruder.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if n, err := intruder.Read(buf); err == nil {
				t.Errorf("the intruder got a reply: %q", buf[:n])
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 || got[0] != "ping" {
				t.Errorf("the remote server got %q, want only the program's ping", got)
			}
		})
	}
}

func replyFieldsOf(reply string) []string {
	f, err := replyFields(reply)
	if err != nil {
		return []string{"E", err.Error()}
	}
	return f
}
