package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// netnsTarget is a target whose network namespace is a new one made for
// the test (`ip netns`), with its loopback up.
func netnsTarget(t testing.TB) *target {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (ip netns)")
	}
	name := fmt.Sprintf("mirrord-agent-test-%d", os.Getpid())
	for _, args := range [][]string{{"netns", "add", name}, {"-n", name, "link", "set", "lo", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	tg := &target{netns: ns}
	t.Cleanup(tg.sockets.drain) // before the namespace's file closes
	return tg
}

// TestTargetDial: connections made by target.dial start in the target's
// namespace (the servers exist only there), and its errors are the
// kernel's, with the codes the session gets.
func TestTargetDial(t *testing.T) {
	tg := netnsTarget(t)
	listen := func(network, addr string) net.Listener {
		var ln net.Listener
		if err := tg.inNetns(func() (err error) { ln, err = net.Listen(network, addr); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.WriteString(c, "hello from the namespace")
				c.Close()
			}
		}()
		return ln
	}
	v4 := listen("tcp", "127.0.0.1:0").Addr().(*net.TCPAddr)
	v6 := listen("tcp", "[::1]:0").Addr().(*net.TCPAddr)
	var echo net.PacketConn
	if err := tg.inNetns(func() (err error) { echo, err = net.ListenPacket("udp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 100)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			echo.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()

	for _, tc := range []struct{ name, network, addr string }{
		{"tcp4", "tcp", v4.String()},
		{"tcp6", "tcp", v6.String()},
		{"name (the simple way)", "tcp", fmt.Sprintf("localhost:%d", v4.Port)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tg.dial(context.Background(), tc.network, tc.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, ok := c.(*net.TCPConn); !ok {
				t.Errorf("a %T, want a *net.TCPConn", c)
			}
			b, err := io.ReadAll(c)
			if err != nil || string(b) != "hello from the namespace" {
				t.Errorf("read %q, %v", b, err)
			}
		})
	}
	t.Run("many, from the socket pool", func(t *testing.T) {
		// More dials than the pool holds: its batches and background
		// refills all make their sockets in the namespace.
		for i := range 5 * poolSize {
			c, err := tg.dial(context.Background(), "tcp", v4.String(), 5*time.Second)
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			b, err := io.ReadAll(c)
			c.Close()
			if err != nil || string(b) != "hello from the namespace" {
				t.Fatalf("dial %d: read %q, %v", i, b, err)
			}
		}
		// At rest the pool holds exactly poolSize of the kind dialed: the
		// agent's open files count its connections plus a constant.
		deadline := time.Now().Add(5 * time.Second)
		for {
			tg.sockets.mu.Lock()
			n := len(tg.sockets.ready[sockKind{unix.AF_INET, unix.SOCK_STREAM}])
			tg.sockets.mu.Unlock()
			if n == poolSize {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d sockets ready after the dials, want %d", n, poolSize)
			}
			time.Sleep(10 * time.Millisecond)
		}
		var want uint64
		if err := tg.inNetns(func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			want, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
			return err
		}); err != nil {
			t.Skipf("no network namespace cookies (Linux 5.14): %v", err)
		}
		for i := range 3 * poolSize {
			fd, err := tg.socket(unix.AF_INET6, unix.SOCK_STREAM)
			if err != nil {
				t.Fatal(err)
			}
			got, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
			fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
			fdfl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			unix.Close(fd)
			if err != nil || got != want || fl&unix.O_NONBLOCK == 0 || fdfl&unix.FD_CLOEXEC == 0 {
				t.Fatalf("socket %d: namespace cookie %d (%v), want %d; flags %#x, fd flags %#x", i, got, err, want, fl, fdfl)
			}
		}
	})
	t.Run("udp", func(t *testing.T) {
		c, err := tg.dial(context.Background(), "udp", echo.LocalAddr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("ping"))
		b := make([]byte, 100)
		n, err := c.Read(b)
		if err != nil || string(b[:n]) != "echo:ping" {
			t.Errorf("read %q, %v", b[:n], err)
		}
	})
	t.Run("refused", func(t *testing.T) {
		// A port of this machine's own namespace is no server there.
		_, err := tg.dial(context.Background(), "tcp", "127.0.0.1:1", 5*time.Second)
		if errorCode(err) != "ECONNREFUSED" || !strings.Contains(err.Error(), "dial tcp 127.0.0.1:1: connect: connection refused") {
			t.Errorf("err %v (code %q), want a refused connect", err, errorCode(err))
		}
	})
	t.Run("timeout and cancel", func(t *testing.T) {
		// A listener whose accept queue is full drops new SYNs: the
		// connect waits.
		var fd int
		if err := tg.inNetns(func() (err error) {
			if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
				return err
			}
			if err = unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
				return err
			}
			return unix.Listen(fd, 0)
		}); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		sa, _ := unix.Getsockname(fd)
		addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
		for i := 0; ; i++ {
			c, err := tg.dial(context.Background(), "tcp", addr, 300*time.Millisecond)
			if err != nil {
				if !os.IsTimeout(err) || errorCode(err) != "ETIMEDOUT" {
					t.Fatalf("err %v (code %q), want a timeout", err, errorCode(err))
				}
				break
			}
			defer c.Close()
			if i > 8 {
				t.Fatal("the accept queue never filled")
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		_, err := tg.dial(ctx, "tcp", addr, 10*time.Second)
		if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
			t.Errorf("err %v after %v, want the context's cancellation", err, time.Since(start))
		}
	})
}

// TestExchangeInNamespace: the agent's DNS exchange reaches the target's
// nameservers in the target's namespace, passes a dead one, and asks again
// over TCP when the UDP answer is truncated.
func TestExchangeInNamespace(t *testing.T) {
	tg := netnsTarget(t)
	var pc net.PacketConn
	var ln net.Listener
	if err := tg.inNetns(func() (err error) {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:53"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", "127.0.0.1:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp && q.Question[0].Name == "big.example." {
			m.Truncated = true
		} else {
			txt := "over udp"
			if !udp {
				txt = "over tcp"
			}
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 5}, Txt: []string{txt}})
		}
		w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		go srv.ActivateAndServe()
		defer srv.Shutdown()
	}
	// The first nameserver has nothing listening: its UDP query is
	// refused, and the next one answers.
	a := &Agent{log: slog.New(slog.DiscardHandler), target: tg,
		resolver: &dns.ClientConfig{Servers: []string{"127.0.0.2", "127.0.0.1"}, Port: "53", Timeout: 2}}
	for name, want := range map[string]string{"small.example.": "over udp", "big.example.": "over tcp"} {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeTXT)
		b, _ := q.Pack()
		out, err := a.exchange(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(out); err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("%s: answer %v, %v", name, r, err)
		}
		if got := r.Answer[0].(*dns.TXT).Txt[0]; got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

// BenchmarkTargetDial: a TCP connect from the target's namespace to a
// server there, with the socket from the pool (as target.dial makes it)
// and with a thread switched into the namespace for each socket (as it
// was made before the pool).
func BenchmarkTargetDial(b *testing.B) {
	tg := netnsTarget(b)
	var ln net.Listener
	if err := tg.inNetns(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	serveEach(ln, func(c net.Conn) { c.Close() })
	addr := ln.Addr().String()
	b.Run("pooled socket", func(b *testing.B) {
		for b.Loop() {
			c, err := tg.dial(context.Background(), "tcp", addr, 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
	b.Run("a switch into the namespace per socket", func(b *testing.B) {
		for b.Loop() {
			var fd int
			if err := tg.inNetns(func() (err error) {
				fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				return err
			}); err != nil {
				b.Fatal(err)
			}
			tg.sockets.put(sockKind{unix.AF_INET, unix.SOCK_STREAM}, []int{fd})
			c, err := tg.dial(context.Background(), "tcp", addr, 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
}
