package goshim

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// modePeers makes the test binary a server that prints the peer of each
// connection it accepts (see peersProgram).
const modePeers = "goshim-test-peers"

func init() {
	if len(os.Args) > 2 && os.Args[1] == modePeers && strings.HasPrefix(os.Args[2], "sig") {
		// The main goroutine keeps the process's first thread, the one the
		// kernel offers a process's signals to first: "sig" accepts on it,
		// "sigthread" on another thread.
		runtime.LockOSThread()
	}
}

// rawAddr formats a raw socket address as netip does ("[::ffff:a.b.c.d]:p"
// for a v4-mapped one).
func rawAddr(b []byte) string {
	sa, ok := parseSockaddr(b)
	if !ok || !sa.inet() {
		return fmt.Sprintf("?%x", b)
	}
	return sa.ap.String()
}

func rawPeername(fd int) string {
	var raw [128]byte
	n := uint32(len(raw))
	if _, _, e := unix.Syscall(unix.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(&raw[0])), uintptr(unsafe.Pointer(&n))); e != 0 {
		return "error:" + e.Error()
	}
	return rawAddr(raw[:n])
}

// peersProgram runs in the sandbox:
//
//	go N          net.Listen on ":0", accept N connections
//	raw4 N, raw6 N  a blocking socket on 0.0.0.0:0 or [::]:0, accept(2) N
//	sig N         raw4, accepting on the first thread; prints "signal" for
//	              each SIGUSR1 (Go's handlers are SA_RESTART)
//	sigthread N   sig, accepting on another thread
//	timeo N       raw4 with a 200 ms SO_RCVTIMEO: prints "error: ..." on EAGAIN
//
// It prints "addr <listening address>", then per connection "conn <the
// address accept gave> <getpeername>", and answers "ok".
func peersProgram(args []string) int {
	fail := func(err error) int { fmt.Println("error:", err); return 1 }
	count, _ := strconv.Atoi(args[1])
	if args[0] == "go" {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			return fail(err)
		}
		fmt.Println("addr", ln.Addr())
		for range count {
			c, err := ln.Accept()
			if err != nil {
				return fail(err)
			}
			peer := "?"
			if rc, err := c.(*net.TCPConn).SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) { peer = rawPeername(int(fd)) })
			}
			fmt.Println("conn", c.RemoteAddr(), peer)
			fmt.Fprintln(c, "ok")
			c.Close()
		}
		return 0
	}
	if args[0] == "sigthread" {
		code := make(chan int)
		go func() { code <- peersProgram(append([]string{"sig"}, args[1:]...)) }()
		return <-code
	}
	if args[0] == "sig" {
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, syscall.SIGUSR1)
		go func() {
			for range ch {
				fmt.Println("signal")
			}
		}()
	}
	family, wild := unix.AF_INET, []byte(nil)
	if args[0] == "raw6" {
		family = unix.AF_INET6
		wild = make([]byte, unix.SizeofSockaddrInet6)
	} else {
		wild = make([]byte, unix.SizeofSockaddrInet4)
	}
	binary.NativeEndian.PutUint16(wild, uint16(family))
	fd, err := unix.Socket(family, unix.SOCK_STREAM, 0) // blocking
	if err != nil {
		return fail(err)
	}
	if err := bindRaw(fd, wild); err != nil {
		return fail(err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		return fail(err)
	}
	if args[0] == "timeo" {
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
	}
	local, _ := sockName(fd)
	fmt.Println("addr", local.ap)
	for range count {
		if args[0] == "sig" {
			fmt.Println("waiting")
		}
		var raw [128]byte
		n := uint32(len(raw))
		r, _, e := unix.Syscall(unix.SYS_ACCEPT, uintptr(fd), uintptr(unsafe.Pointer(&raw[0])), uintptr(unsafe.Pointer(&n)))
		if e != 0 {
			return fail(e)
		}
		c := int(r)
		fmt.Println("conn", rawAddr(raw[:n]), rawPeername(c))
		unix.Write(c, []byte("ok\n"))
		unix.Close(c)
	}
	return 0
}

// deliveries stands in for the session's table of delivered connections.
type deliveries struct {
	mu sync.Mutex
	m  map[netip.AddrPort]netip.AddrPort
}

func (d *deliveries) lookup(from netip.AddrPort, port uint16) (netip.AddrPort, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.m[from]
	return c, ok
}

// deliver connects to port on 127.0.0.1 as mirrord does for client
// (binding first and recording its end); an invalid client is an
// ordinary local connection. It returns the server's answer.
func (d *deliveries) deliver(t *testing.T, port uint16, client netip.AddrPort) string {
	t.Helper()
	dl := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		if !client.IsValid() {
			return nil
		}
		var err error
		rc.Control(func(fd uintptr) {
			if err = unix.Bind(int(fd), &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
				return
			}
			sa, _ := unix.Getsockname(int(fd))
			from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
			d.mu.Lock()
			d.m[from] = client
			d.mu.Unlock()
		})
		return err
	}}
	c, err := dl.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("dialing the program: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	n, _ := c.Read(buf)
	return strings.TrimSpace(string(buf[:n]))
}

func peersSandbox(t *testing.T, d *deliveries, args ...string) (*Sandbox, <-chan string, uint16) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Path: os.Args[0], Args: append([]string{os.Args[0], modePeers}, args...), Env: []string{testPath}}
	s := startSandbox(t, spec, WithStdio(nil, w, os.Stderr), WithIncomingPeers(d.lookup))
	w.Close()
	if err := s.Go(); err != nil {
		t.Fatalf("Go: %v", err)
	}
	ch := make(chan string, 16)
	go func() {
		defer r.Close()
		buf := make([]byte, 4096)
		var line []byte
		for {
			n, err := r.Read(buf)
			for _, b := range buf[:n] {
				if b == '\n' {
					ch <- string(line)
					line = nil
					continue
				}
				line = append(line, b)
			}
			if err != nil {
				close(ch)
				return
			}
		}
	}()
	l := nextLine(t, ch)
	ap, err := netip.ParseAddrPort(strings.TrimPrefix(l, "addr "))
	if err != nil {
		t.Fatalf("program said %q", l)
	}
	return s, ch, ap.Port()
}

// TestIncomingPeers: a delivered connection's accept address and
// getpeername are the target's client, in the listening socket's family;
// an ordinary local connection keeps its own.
func TestIncomingPeers(t *testing.T) {
	t.Parallel()
	v4 := netip.MustParseAddrPort("203.0.113.7:4242")
	v6 := netip.MustParseAddrPort("[2001:db8::7]:4343")
	for _, tc := range []struct {
		mode          string
		v4, v6, local string // what the program prints for a v4 client, a v6 client, a local connection
	}{
		// Go's net package shows a v4-mapped address as IPv4.
		{"go", "203.0.113.7:4242 [::ffff:203.0.113.7]:4242", "[2001:db8::7]:4343 [2001:db8::7]:4343", "127.0.0.1:"},
		{"raw6", "[::ffff:203.0.113.7]:4242 [::ffff:203.0.113.7]:4242", "[2001:db8::7]:4343 [2001:db8::7]:4343", "[::ffff:127.0.0.1]:"},
		// An IPv4 socket cannot show an IPv6 client: it keeps mirrord's.
		{"raw4", "203.0.113.7:4242 203.0.113.7:4242", "127.0.0.1:", "127.0.0.1:"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			d := &deliveries{m: map[netip.AddrPort]netip.AddrPort{}}
			s, lines, port := peersSandbox(t, d, tc.mode, "3")
			for _, c := range []struct {
				client netip.AddrPort
				want   string
			}{{v4, tc.v4}, {v6, tc.v6}, {netip.AddrPort{}, tc.local}} {
				if got := d.deliver(t, port, c.client); got != "ok" {
					t.Fatalf("answer %q", got)
				}
				l := strings.TrimPrefix(nextLine(t, lines), "conn ")
				if !strings.HasPrefix(l, c.want) {
					t.Errorf("client %v: program saw %q, want %q", c.client, l, c.want)
				}
			}
			if code, _ := s.Wait(); code != 0 {
				t.Errorf("exit code %d", code)
			}
		})
	}
}

// TestIncomingPeersSignal: a blocking accept that the supervisor waits in
// still lets the program's signal handlers run, and restarts as the
// kernel's would (SA_RESTART).
func TestIncomingPeersSignal(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"sig", "sigthread"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testPeersSignal(t, mode)
		})
	}
}

func testPeersSignal(t *testing.T, mode string) {
	d := &deliveries{m: map[netip.AddrPort]netip.AddrPort{}}
	s, lines, port := peersSandbox(t, d, mode, "1")
	if l := nextLine(t, lines); l != "waiting" {
		t.Fatalf("program said %q", l)
	}
	time.Sleep(300 * time.Millisecond) // in accept, in the supervisor
	begin := time.Now()
	s.Signal(syscall.SIGUSR1)
	if l := nextLine(t, lines); l != "signal" {
		t.Fatalf("program said %q, want signal", l)
	}
	t.Logf("signal handled after %v", time.Since(begin))
	time.Sleep(100 * time.Millisecond)
	client := netip.MustParseAddrPort("198.51.100.9:5151")
	if got := d.deliver(t, port, client); got != "ok" {
		t.Fatalf("answer %q", got)
	}
	if l := nextLine(t, lines); l != "conn 198.51.100.9:5151 198.51.100.9:5151" {
		t.Errorf("program said %q", l)
	}
	if code, _ := s.Wait(); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// TestIncomingPeersTimeout: a blocking accept the supervisor waits in ends
// after the socket's SO_RCVTIMEO with EAGAIN, as the kernel's does.
func TestIncomingPeersTimeout(t *testing.T) {
	t.Parallel()
	d := &deliveries{m: map[netip.AddrPort]netip.AddrPort{}}
	s, lines, _ := peersSandbox(t, d, "timeo", "1")
	begin := time.Now()
	if l := nextLine(t, lines); l != "error: "+unix.EAGAIN.Error() {
		t.Errorf("program said %q, want EAGAIN", l)
	}
	if el := time.Since(begin); el < 150*time.Millisecond || el > 2*time.Second {
		t.Errorf("accept returned after %v, want about 200 ms", el)
	}
	s.Wait()
}

// TestIncomingPeersStop: a process whose thread waits in an accept the
// supervisor runs stops whole on SIGSTOP (as Ctrl-Z stops it), and the
// accept goes on after SIGCONT.
func TestIncomingPeersStop(t *testing.T) {
	t.Parallel()
	d := &deliveries{m: map[netip.AddrPort]netip.AddrPort{}}
	s, lines, port := peersSandbox(t, d, "sigthread", "1")
	if l := nextLine(t, lines); l != "waiting" {
		t.Fatalf("program said %q", l)
	}
	time.Sleep(200 * time.Millisecond) // in accept, in the supervisor
	pid := s.Pid()
	s.Signal(syscall.SIGSTOP)
	allStopped := func() (bool, string) {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		var states []string
		stopped := len(tasks) > 0
		for _, task := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			i := strings.LastIndexByte(string(b), ')')
			if i < 0 || i+2 >= len(b) {
				continue
			}
			states = append(states, string(b[i+2]))
			stopped = stopped && b[i+2] == 'T'
		}
		return stopped, strings.Join(states, "")
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		ok, states := allStopped()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the program's threads did not all stop: %s", states)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Signal(syscall.SIGCONT)
	client := netip.MustParseAddrPort("198.51.100.9:5152")
	if got := d.deliver(t, port, client); got != "ok" {
		t.Fatalf("answer %q", got)
	}
	if l := nextLine(t, lines); l != "conn 198.51.100.9:5152 198.51.100.9:5152" {
		t.Errorf("program said %q", l)
	}
	if code, _ := s.Wait(); code != 0 {
		t.Errorf("exit code %d", code)
	}
}
