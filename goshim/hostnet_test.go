package goshim

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// modeNet makes the test binary a program that uses the network the way
// a server or a client on this machine would (see netProgram).
const modeNet = "goshim-test-net"

func rawInet(ap string) []byte {
	a := netip.MustParseAddrPort(ap)
	if a.Addr().Is4() {
		b := make([]byte, unix.SizeofSockaddrInet4)
		binary.NativeEndian.PutUint16(b, unix.AF_INET)
		binary.BigEndian.PutUint16(b[2:], a.Port())
		ip := a.Addr().As4()
		copy(b[4:], ip[:])
		return b
	}
	b := make([]byte, unix.SizeofSockaddrInet6)
	binary.NativeEndian.PutUint16(b, unix.AF_INET6)
	binary.BigEndian.PutUint16(b[2:], a.Port())
	ip := a.Addr().As16()
	copy(b[8:], ip[:])
	return b
}

func rawUnix(name string) []byte {
	b := binary.NativeEndian.AppendUint16(nil, unix.AF_UNIX)
	return append(b, name...)
}

func TestPlaces(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		raw       []byte
		bind      place
		send      place
		parseFail bool
	}{
		{"v4 loopback", rawInet("127.0.0.1:8080"), placeHost, placeHost, false},
		{"v4 loopback other", rawInet("127.3.2.1:0"), placeHost, placeHost, false},
		{"v4 wildcard port", rawInet("0.0.0.0:8080"), placeHost, placeHost, false},
		{"v4 wildcard port 0", rawInet("0.0.0.0:0"), placeLater, placeHost, false},
		{"v6 loopback", rawInet("[::1]:5432"), placeHost, placeHost, false},
		{"v6 wildcard", rawInet("[::]:80"), placeHost, placeHost, false},
		{"v6 wildcard port 0", rawInet("[::]:0"), placeLater, placeHost, false},
		{"v4-mapped loopback", rawInet("[::ffff:127.0.0.1]:80"), placeHost, placeHost, false},
		{"remote v4", rawInet("10.1.2.3:80"), placeHost, placeSandbox, false},
		{"remote v6", rawInet("[2001:db8::1]:80"), placeHost, placeSandbox, false},
		{"sandbox address", rawInet("198.18.0.1:80"), placeSandbox, placeSandbox, false},
		{"sandbox DNS", rawInet("198.18.0.53:53"), placeSandbox, placeSandbox, false},
		{"unix path", rawUnix("/tmp/x.sock\x00"), placeSandbox, placeSandbox, false},
		{"unix abstract", rawUnix("\x00name"), placeHost, placeHost, false},
		{"short v4", rawInet("127.0.0.1:1")[:8], placeSandbox, placeSandbox, true},
		{"too short", []byte{2}, placeSandbox, placeSandbox, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sa, ok := parseSockaddr(tc.raw)
			if ok == tc.parseFail {
				t.Fatalf("parseSockaddr ok=%t, want %t", ok, !tc.parseFail)
			}
			if !ok {
				return
			}
			if got := bindPlace(sa); got != tc.bind {
				t.Errorf("bindPlace = %d, want %d", got, tc.bind)
			}
			if got := sendPlace(sa); got != tc.send {
				t.Errorf("sendPlace = %d, want %d", got, tc.send)
			}
		})
	}
}

// netProgram runs in the sandbox:
//
//	listen NET ADDR     listen (tcp) or bind (udp), print "addr <addr>",
//	                    answer one connection or datagram with "echo:<line>"
//	dial NET ADDR MSG   connect, send MSG, print the answer
//	sendto ADDR MSG     UDP from an unconnected wildcard socket
//	pair                a child listens on 127.0.0.1:0, this process dials it
func netProgram(args []string) int {
	fail := func(err error) int { fmt.Println("error:", err); return 1 }
	switch args[0] {
	case "listen":
		if strings.HasPrefix(args[1], "udp") {
			pc, err := net.ListenPacket(args[1], args[2])
			if err != nil {
				return fail(err)
			}
			fmt.Println("addr", pc.LocalAddr())
			buf := make([]byte, 1500)
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return fail(err)
			}
			pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
			return 0
		}
		ln, err := net.Listen(args[1], args[2])
		if err != nil {
			return fail(err)
		}
		fmt.Println("addr", ln.Addr())
		c, err := ln.Accept()
		if err != nil {
			return fail(err)
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		fmt.Fprintf(c, "echo:%s", line)
		c.Close()
		return 0
	case "dial":
		c, err := net.DialTimeout(args[1], args[2], 5*time.Second)
		if err != nil {
			return fail(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintln(c, args[3])
		buf := make([]byte, 200)
		n, err := c.Read(buf)
		if err != nil {
			return fail(err)
		}
		fmt.Printf("got %s\n", strings.TrimSpace(string(buf[:n])))
		return 0
	case "sendto":
		pc, err := net.ListenPacket("udp", ":0")
		if err != nil {
			return fail(err)
		}
		to, _ := net.ResolveUDPAddr("udp", args[1])
		pc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := pc.WriteTo([]byte(args[2]+"\n"), to); err != nil {
			return fail(err)
		}
		buf := make([]byte, 200)
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			return fail(err)
		}
		fmt.Printf("got %s\n", strings.TrimSpace(string(buf[:n])))
		return 0
	case "pair":
		child := exec.Command(os.Args[0], modeNet, "listen", "tcp", "127.0.0.1:0")
		out, _ := child.StdoutPipe()
		if err := child.Start(); err != nil {
			return fail(err)
		}
		sc := bufio.NewScanner(out)
		if !sc.Scan() {
			return fail(fmt.Errorf("child printed nothing"))
		}
		addr := strings.TrimPrefix(sc.Text(), "addr ")
		os.Args = []string{os.Args[0], modeNet}
		code := netProgram([]string{"dial", "tcp", addr, "sibling"})
		child.Wait()
		return code
	}
	return 2
}

// sandboxed starts the test binary in netProgram mode and returns a
// reader of its output lines, and a function that waits for its exit.
func sandboxed(t *testing.T, args ...string) (lines <-chan string, wait func() int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Path: os.Args[0], Args: append([]string{os.Args[0], modeNet}, args...), Env: []string{testPath}}
	s := startSandbox(t, spec, WithStdio(nil, w, os.Stderr))
	w.Close()
	if err := s.Go(); err != nil {
		t.Fatalf("Go: %v", err)
	}
	ch := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
		close(ch)
		r.Close()
	}()
	return ch, func() int {
		code, _ := s.Wait()
		return code
	}
}

func nextLine(t *testing.T, lines <-chan string) string {
	t.Helper()
	select {
	case l := <-lines:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("the program printed nothing in 10 s")
	}
	return ""
}

// TestHostLoopbackServers: the program's servers answer on this machine,
// in the address scope they bound, from the moment listen returns.
func TestHostLoopbackServers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		network, bind string
		dial          []string // addresses to reach it at, %d the port
	}{
		{"tcp4", "127.0.0.1:0", []string{"127.0.0.1:%d"}},
		{"tcp6", "[::1]:0", []string{"[::1]:%d"}},
		{"tcp", ":0", []string{"127.0.0.1:%d", "[::1]:%d"}},
		{"tcp4", "0.0.0.0:0", []string{"127.0.0.1:%d"}},
		{"udp4", "127.0.0.1:0", []string{"127.0.0.1:%d"}},
		{"udp6", "[::1]:0", []string{"[::1]:%d"}},
		{"udp", ":%d", []string{"127.0.0.1:%d"}}, // a wildcard UDP server has a fixed port
	} {
		for _, dial := range tc.dial {
			t.Run(tc.network+" "+tc.bind+" via "+dial, func(t *testing.T) {
				t.Parallel()
				bind := tc.bind
				if strings.Contains(bind, "%d") {
					bind = fmt.Sprintf(bind, freeUDPPort(t))
				}
				lines, wait := sandboxed(t, "listen", tc.network, bind)
				l := nextLine(t, lines)
				ap, err := netip.ParseAddrPort(strings.TrimPrefix(l, "addr "))
				if err != nil {
					t.Fatalf("program said %q", l)
				}
				addr := fmt.Sprintf(dial, ap.Port())
				// No retry: the server must answer as soon as it said so.
				c, err := net.DialTimeout(strings.TrimRight(tc.network, "46"), addr, 5*time.Second)
				if err != nil {
					t.Fatalf("dialing the program's server at %s from this machine: %v", addr, err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintln(c, "hi")
				buf := make([]byte, 100)
				n, err := c.Read(buf)
				if err != nil || string(buf[:n]) != "echo:hi\n" {
					t.Fatalf("answer %q, %v; want echo:hi", buf[:n], err)
				}
				if code := wait(); code != 0 {
					t.Errorf("program exit code %d", code)
				}
			})
		}
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// echoHost serves "echo:<line>" on this machine (tcp, udp or unix).
func echoHost(t *testing.T, network, addr string) string {
	t.Helper()
	if strings.HasPrefix(network, "udp") {
		pc, err := net.ListenPacket(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
			}
		}()
		return pc.LocalAddr().String()
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // cleanups run last first: after the Close below
	t.Cleanup(func() { ln.Close() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			fmt.Fprintf(c, "echo:%s", line)
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestHostLoopbackClients: the program reaches services on this machine's
// loopback and its abstract unix sockets.
func TestHostLoopbackClients(t *testing.T) {
	t.Parallel()
	b := make([]byte, 4)
	rand.Read(b)
	abstract := "@mirrord-goshim-test-" + hex.EncodeToString(b)
	for _, tc := range []struct{ network, listen string }{
		{"tcp4", "127.0.0.1:0"},
		{"tcp6", "[::1]:0"},
		{"udp4", "127.0.0.1:0"},
		{"udp6", "[::1]:0"},
		{"unix", abstract},
	} {
		t.Run(tc.network, func(t *testing.T) {
			t.Parallel()
			addr := echoHost(t, tc.network, tc.listen)
			lines, wait := sandboxed(t, "dial", tc.network, addr, "ping")
			if l := nextLine(t, lines); l != "got echo:ping" {
				t.Fatalf("program said %q, want got echo:ping", l)
			}
			wait()
		})
	}
	t.Run("udp sendto", func(t *testing.T) {
		t.Parallel()
		addr := echoHost(t, "udp4", "127.0.0.1:0")
		lines, wait := sandboxed(t, "sendto", addr, "ping")
		if l := nextLine(t, lines); l != "got echo:ping" {
			t.Fatalf("program said %q, want got echo:ping", l)
		}
		wait()
	})
	t.Run("two processes", func(t *testing.T) {
		t.Parallel()
		lines, wait := sandboxed(t, "pair")
		if l := nextLine(t, lines); l != "got echo:sibling" {
			t.Fatalf("program said %q, want got echo:sibling", l)
		}
		wait()
	})
}

// TestHostPortTaken: a port taken on this machine is taken for the
// program too, as without mirrord.
func TestHostPortTaken(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, bind := range []string{fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("0.0.0.0:%d", port)} {
		lines, wait := sandboxed(t, "listen", "tcp4", bind)
		l := nextLine(t, lines)
		if !strings.Contains(l, "address already in use") {
			t.Errorf("listen on %s: program said %q, want address already in use", bind, l)
		}
		wait()
	}
}
