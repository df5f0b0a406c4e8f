package intproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/addrfilter"
	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/fsfilter"
	"github.com/mirrord-go/mirrord/protocol"
	"github.com/mirrord-go/mirrord/relay"
)

// The layer protocol: the C preload library (preload/csrc/layer.c) and
// `mirrord layer-exec` talk to the internal proxy over a unix socket, one
// request line and one reply line per connection, fields separated by
// tabs. Requests:
//
//	C <tcp|udp> <ip> <port>   route a connection / datagrams to ip:port;
//	                          the request carries the program's socket
//	                          (SCM_RIGHTS): see routeTCP and routeUDP
//	C unix <path>             route a stream connection to a unix socket
//	                          path (reply: L, E, or "R <path>": connect
//	                          to this path instead)
//	G <name>                  resolve a name
//	D <base64 query>          answer a DNS query (layer-exec)
//	P <ip> <port>             the program listens on this port
//	O <flags> <mode> <path>   open a file (flags in decimal, mode in octal)
//	S <follow> <path>         stat a file
//	K <path>                  read a symlink
//	U <dir> <path>            unlink (dir=1: rmdir)
//	M <mode> <path>           mkdir (mode in octal)
//	N <from> <to>             rename
//	H                         hostname and resolver (layer-exec)
//	W                         a process of the program started: the
//	                          connection stays open while it lives
//	I <ip> <port> <port>      the target's client of the connection from
//	                          ip:port (mirrord's end on loopback) to the
//	                          program's port (peers.go)
//
// Replies: "L" (do it locally), "E <errno>", "Y" (the program's socket
// is connected: to mirrord's relay of the remote connection), "R
// 127.0.0.1 <port>" (send there instead; "R <path>" for unix), "A <ip>..."
// / "A <base64>", "F" with a file
// descriptor, "I <stat fields>", "T <target>", "H <hostname> <ndots>
// <search...>", "OK". An I request is answered "A <ip> <port>", or "L"
// when the connection is not one of mirrord's.

// LayerOptions configures ServeLayer.
type LayerOptions struct {
	// FS classifies file paths; nil leaves every file local.
	FS *fsfilter.Filter
	// OnListen is called with each port the program listens on, and the
	// pid of the process that said so.
	OnListen func(port uint16, pid int)
	// OnJoin and OnLeave are called when a process of the program holds
	// a connection (W) and when it closes, with the process's end.
	OnJoin, OnLeave func()
	// Hostname is the name gethostname returns in the program (empty: the
	// machine's).
	Hostname string
	// View, when set, opens the target's files as real kernel files
	// (goshim.View: a FUSE view), so that large files stream and writes
	// reach the target. Without it, the program gets a copy of a remote
	// file and remote writes stay local.
	View interface {
		Open(path string, flags int, mode uint32) (*os.File, error)
		// Identity is the device and inode numbers fstat gives the
		// target's file at path, with those numbers, opened in the view:
		// stat of a remote path says the same.
		Identity(path string, dev, ino uint64) (uint64, uint64)
	}
	// Copies, used without a View, opens remote files for writing
	// (goshim.Copies: write-only through a pipe; read-write fails with
	// EOPNOTSUPP), so that a write never lands in a local file.
	Copies interface {
		Open(path string, flags int, mode uint32) (*os.File, error)
	}
	// RemoteWrites allows writes to the target's files (fs mode write, or
	// read_write patterns); others classified remote are read-only.
	RemoteWrites bool
}

// ServeLayer answers layer requests on ln until it is closed.
func (p *Proxy) ServeLayer(ln net.Listener, opts LayerOptions) {
	l := &layerServer{p: p, opts: opts}
	defer l.cleanup()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		uc := c.(*net.UnixConn)
		if !allowedPeer(uc) {
			// The socket is abstract: any local user could reach it and
			// use the session's agent (its network, files, incoming).
			p.log.Warn("layer: refused a connection from another user's process")
			uc.Close()
			continue
		}
		go l.serve(uc)
	}
}

// allowedPeer says whether the process at the other end of c may use the
// session: one of this user's (or root's), or a descendant of this
// mirrord process, which covers a program that was started as root and
// dropped its privileges.
func allowedPeer(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return false
	}
	if cred.Uid == uint32(os.Geteuid()) || cred.Uid == 0 {
		return true
	}
	return descendsFrom(int(cred.Pid), os.Getpid())
}

// descendsFrom walks pid's parents (at most 64) looking for ancestor.
func descendsFrom(pid, ancestor int) bool {
	for range 64 {
		if pid == ancestor {
			return true
		}
		if pid <= 1 {
			return false
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return false
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parens.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			return false
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			return false
		}
		if pid, err = strconv.Atoi(f[1]); err != nil {
			return false
		}
	}
	return false
}

type layerServer struct {
	p    *Proxy
	opts LayerOptions
	// relayListening, in tests, is called with the address of each TCP
	// relay's listener before the program's socket is connected to it.
	relayListening func(net.Addr)

	mu     sync.Mutex
	tmpDir string // directory snapshots live here until the session ends
}

func (l *layerServer) cleanup() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tmpDir != "" {
		os.RemoveAll(l.tmpDir)
	}
}

func (l *layerServer) serve(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	line, sock, err := readRequest(c)
	if sock >= 0 {
		// The program's socket: the proxy's copy must not outlive the
		// request, or the program's close would not end the connection.
		defer unix.Close(sock)
	}
	if err != nil {
		return
	}
	f := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
	if f[0] == "W" {
		l.hold(c)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if f[0] == "P" {
		if raw, err := c.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) {
				if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
					ctx = context.WithValue(ctx, peerKey{}, int(cred.Pid))
				}
			})
		}
	}
	reply, fd := l.handle(ctx, f, sock)
	var oob []byte
	if fd != nil {
		defer fd.Close()
		oob = unix.UnixRights(int(fd.Fd()))
	}
	c.WriteMsgUnix([]byte(reply+"\n"), oob, nil)
}

// hold keeps a W connection until the process at its other end closes
// it, by ending or by executing a new image (the library opens it
// close-on-exec, and the new image opens its own; see layer.c).
func (l *layerServer) hold(c *net.UnixConn) {
	if l.opts.OnJoin == nil {
		return
	}
	c.SetDeadline(time.Time{})
	l.opts.OnJoin()
	defer l.opts.OnLeave()
	c.Write([]byte("OK\n"))
	io.Copy(io.Discard, c)
}

type peerKey struct{}

// peerPid is the pid of the process at the other end of the request's
// connection (0 if unknown).
func peerPid(ctx context.Context) int {
	pid, _ := ctx.Value(peerKey{}).(int)
	return pid
}

func errnoReply(err error) string { return "E\t" + strconv.Itoa(int(Errno(err))) }

// readRequest reads one request line from c, and the descriptor that came
// with it (-1 if none; any others are closed).
func readRequest(c *net.UnixConn) (line string, fd int, err error) {
	fd = -1
	buf, oob := make([]byte, 512), make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
		for _, m := range msgs {
			fds, _ := unix.ParseUnixRights(&m)
			for _, d := range fds {
				if fd < 0 {
					fd = d
				} else {
					unix.Close(d)
				}
			}
		}
	}
	if err != nil {
		return "", fd, err
	}
	if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
		return string(buf[:i+1]), fd, nil
	}
	rest, err := bufio.NewReader(c).ReadString('\n')
	return string(buf[:n]) + rest, fd, err
}

// handle answers the request f; sock is the descriptor that came with it
// (-1 if none), which the caller closes.
func (l *layerServer) handle(ctx context.Context, f []string, sock int) (string, *os.File) {
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	switch f[0] {
	case "C":
		if arg(1) == "unix" {
			return l.routeUnix(ctx, arg(2)), nil
		}
		dst, err := netip.ParseAddrPort(net.JoinHostPort(arg(2), arg(3)))
		if err != nil {
			return "L", nil
		}
		if arg(1) == "udp" {
			return l.routeUDP(ctx, dst, sock), nil
		}
		return l.routeTCP(ctx, dst, sock), nil
	case "G":
		return l.resolve(ctx, arg(1)), nil
	case "D":
		q, err := base64.StdEncoding.DecodeString(arg(1))
		if err != nil {
			return "E\t" + strconv.Itoa(int(syscall.EINVAL)), nil
		}
		a, err := l.p.DNS(ctx, q)
		if err != nil {
			return errnoReply(err), nil
		}
		return "A\t" + base64.StdEncoding.EncodeToString(a), nil
	case "P":
		// A server on loopback only is private to this machine, as the
		// netstack engine treats it too: it gets no remote traffic.
		ip, err := netip.ParseAddr(arg(1))
		if port, perr := strconv.ParseUint(arg(2), 10, 16); err == nil && perr == nil && !ip.Unmap().IsLoopback() && l.opts.OnListen != nil {
			l.opts.OnListen(uint16(port), peerPid(ctx))
		}
		return "OK", nil
	case "I":
		from, err1 := netip.ParseAddrPort(net.JoinHostPort(arg(1), arg(2)))
		port, err2 := strconv.ParseUint(arg(3), 10, 16)
		if err1 != nil || err2 != nil {
			return "L", nil
		}
		client, ok := l.p.OriginalPeer(from, uint16(port))
		if !ok {
			return "L", nil
		}
		return fmt.Sprintf("A\t%s\t%d", client.Addr(), client.Port()), nil
	case "H":
		r := l.p.hello.Resolver
		return strings.Join(append([]string{"H", l.opts.Hostname, strconv.Itoa(r.Ndots)}, r.Search...), "\t"), nil
	case "O":
		flags, err1 := strconv.Atoi(arg(1))
		mode, err2 := strconv.ParseUint(arg(2), 8, 32)
		if err1 != nil || err2 != nil {
			return "L", nil
		}
		return l.open(ctx, arg(3), flags, uint32(mode))
	case "CD":
		return l.chdir(arg(1))
	case "S":
		return l.stat(ctx, arg(2), arg(1) == "1"), nil
	case "X", "Y":
		return l.xattr(ctx, f[0] == "Y", arg(1) == "1", arg(2), arg(3)), nil
	case "Q":
		return l.statfs(ctx, arg(1)), nil
	case "AX":
		mode, err := strconv.ParseUint(arg(2), 10, 32)
		if err != nil {
			return "E\t" + strconv.Itoa(int(syscall.EINVAL)), nil
		}
		return l.access(ctx, arg(3), uint32(mode), arg(1) == "1"), nil
	case "R":
		class, err1 := strconv.ParseUint(arg(2), 10, 16)
		qtype, err2 := strconv.ParseUint(arg(3), 10, 16)
		if err1 != nil || err2 != nil || arg(4) == "" {
			return "L", nil
		}
		return l.resQuery(ctx, arg(1) == "s", uint16(class), uint16(qtype), arg(4)), nil
	case "Z":
		q, err := hex.DecodeString(arg(1))
		if err != nil {
			return "L", nil
		}
		if m := new(dns.Msg); m.Unpack(q) != nil || !l.p.dnsRemote(m) {
			return "L", nil
		}
		a, err := l.p.DNS(ctx, q)
		if err != nil {
			return errnoReply(err), nil
		}
		return dnsReply(a), nil
	case "U", "M", "N":
		return l.change(ctx, f[0], arg(1), arg(2)), nil
	case "J", "T", "B", "A":
		return l.modify(ctx, f[0], f[1:]), nil
	case "FC", "FR", "FO":
		return l.sandboxFile(ctx, f[0], f[1:])
	case "LC":
		// A sandboxed program's connect (LayerClient.ConnectRoute).
		dst, err := netip.ParseAddrPort(net.JoinHostPort(arg(1), arg(2)))
		if err != nil {
			return "OK", nil
		}
		local, e := l.p.ConnectRoute(dst, func() (bool, bool) { return arg(3) == "udp", true })
		switch {
		case e != 0:
			return "E\t" + strconv.Itoa(int(e)), nil
		case local:
			return "L", nil
		}
		return "OK", nil
	case "K":
		act, path := l.classify(arg(1), false)
		switch act {
		case fsfilter.Local:
			return "L", nil
		case fsfilter.NotFound:
			return "E\t" + strconv.Itoa(int(syscall.ENOENT)), nil
		}
		t, err := l.p.Readlink(ctx, path)
		if err != nil {
			return errnoReply(err), nil
		}
		return "T\t" + t, nil
	}
	return "E\t" + strconv.Itoa(int(syscall.ENOSYS)), nil
}

// routeTCP dials dst through the agent when the outgoing filter says so,
// then connects the program's socket sock (passed with the request) to a
// relay of that connection and answers "Y". The remote dial happens
// first, so that connect fails as it would in the pod.
//
// The relay is a one-shot listener on this machine's loopback, which any
// local user can connect to: handing the program a port to connect to
// would let another user's process race it and take the remote
// connection. So the proxy connects the program's own socket, and takes
// only the connection whose peer is that socket's address.
func (l *layerServer) routeTCP(ctx context.Context, dst netip.AddrPort, sock int) string {
	if !l.p.remote(ctx, addrfilter.TCP, dst) {
		return "L"
	}
	family, err := inetSocket(sock, unix.SOCK_STREAM)
	if err != nil {
		l.p.log.Warn("layer: a connect request without the program's socket", "dst", dst, "err", err)
		return errnoReply(err)
	}
	// The relay's listener is made while the agent dials: its calls then
	// add nothing to the program's wait.
	type listened struct {
		ln  *net.TCPListener
		err error
	}
	lc := make(chan listened, 1)
	go func() {
		// No keepalive on the relay's connection: both ends are here
		// (and its options were 4 of a connect's syscalls).
		lcfg := net.ListenConfig{KeepAlive: -1}
		ln, err := lcfg.Listen(context.Background(), "tcp4", "127.0.0.1:0")
		if err != nil {
			lc <- listened{nil, err}
			return
		}
		lc <- listened{ln.(*net.TCPListener), nil}
	}()
	remote, err := l.p.dialRemoteTCP(ctx, dst)
	r := <-lc
	if r.err != nil {
		if remote != nil {
			remote.Close()
		}
		return errnoReply(r.err)
	}
	defer r.ln.Close()
	if err != nil {
		return errnoReply(err)
	}
	c, err := l.connectRelay(r.ln, sock, family)
	if err != nil {
		remote.Close()
		return errnoReply(err)
	}
	go func() {
		defer remote.Close()
		defer c.Close()
		relay.Splice(c, remote)
	}()
	return "Y"
}

// relayAccept bounds the wait for the program's socket to reach the relay.
const relayAccept = 5 * time.Second

// connectRelay connects the program's TCP socket sock (of family) to ln,
// a new loopback listener, and returns the proxy's end of that
// connection. A connection from any other socket that reaches the
// listener first is closed. sock keeps its file status flags: a
// non-blocking socket's connect completes while the proxy waits for it.
func (l *layerServer) connectRelay(ln *net.TCPListener, sock, family int) (*net.TCPConn, error) {
	var err error
	if l.relayListening != nil {
		l.relayListening(ln.Addr())
	}
	port := ln.Addr().(*net.TCPAddr).Port
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	if family == unix.AF_INET6 {
		sa = &unix.SockaddrInet6{Port: port, Addr: netip.AddrFrom4([4]byte{127, 0, 0, 1}).As16()}
	}
	for {
		err = unix.Connect(sock, sa)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil && err != unix.EINPROGRESS {
		return nil, err
	}
	local, err := unix.Getsockname(sock)
	if err != nil {
		return nil, err
	}
	want := sockaddrPort(local)
	ln.SetDeadline(time.Now().Add(relayAccept))
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			return nil, err
		}
		if c.RemoteAddr().(*net.TCPAddr).AddrPort() == want {
			return c, nil
		}
		l.p.log.Warn("layer: refused a connection to a relay from another socket", "from", c.RemoteAddr(), "want", want)
		c.Close()
	}
}

// inetSocket checks that fd is an IPv4 or IPv6 socket of type typ and
// returns its family.
func inetSocket(fd, typ int) (int, error) {
	if fd < 0 {
		return 0, syscall.EINVAL
	}
	t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return 0, err
	}
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return 0, err
	}
	if t != typ || (family != unix.AF_INET && family != unix.AF_INET6) {
		return 0, syscall.EINVAL
	}
	return family, nil
}

// routeUnix answers a connect of a stream socket to a unix socket path:
// "L", or the errno of the target's connect, or the path of a listener
// relaying to the target's socket (see RelayUnix).
func (l *layerServer) routeUnix(ctx context.Context, path string) string {
	relayPath, err := l.p.RelayUnix(ctx, path)
	switch {
	case err != nil:
		return errnoReply(err)
	case relayPath == "":
		return "L"
	}
	return "R\t" + relayPath
}

// udpIdle ends a UDP association nobody used for this long (UDP has no
// close the proxy could see).
const udpIdle = 2 * time.Minute

// routeUDP gives the program a loopback UDP socket standing for dst:
// datagrams to it go to dst (through the agent, or to the DNS resolver for
// port 53), replies come back from it. It takes datagrams from the
// program's socket sock only (passed with the request): it is connected
// to that socket's address, so the kernel drops what other local users
// send to its port.
func (l *layerServer) routeUDP(ctx context.Context, dst netip.AddrPort, sock int) string {
	var exchange func(ctx context.Context, b []byte) ([]byte, error) // DNS
	var remote net.Conn
	switch {
	case dst.Port() == 53 && l.p.cfg.Feature.Network.DNS.Enabled:
		exchange = l.p.DNS
	case l.p.remote(ctx, addrfilter.UDP, dst):
	default:
		return "L"
	}
	peer, err := udpSource(sock)
	if err != nil {
		l.p.log.Warn("layer: a datagram route request without the program's socket", "dst", dst, "err", err)
		return errnoReply(err)
	}
	if exchange == nil {
		if remote, err = l.p.dialRemoteUDP(ctx, dst); err != nil {
			return errnoReply(err)
		}
	}
	pc, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, net.UDPAddrFromAddrPort(peer))
	if err != nil {
		if remote != nil {
			remote.Close()
		}
		return errnoReply(err)
	}
	go func() {
		defer pc.Close()
		if remote != nil {
			defer remote.Close()
			go func() {
				buf := make([]byte, 65536)
				for {
					n, err := remote.Read(buf)
					if err != nil {
						pc.Close()
						return
					}
					pc.Write(buf[:n])
				}
			}()
		}
		buf := make([]byte, 65536)
		for {
			pc.SetReadDeadline(time.Now().Add(udpIdle))
			n, err := pc.Read(buf)
			if err != nil {
				if errors.Is(err, syscall.ECONNREFUSED) {
					continue // an ICMP error for a reply the program's socket did not take
				}
				return
			}
			if remote != nil {
				remote.Write(buf[:n])
				continue
			}
			q := append([]byte(nil), buf[:n]...)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if a, err := exchange(ctx, q); err == nil {
					pc.Write(a)
				}
			}()
		}
	}()
	return fmt.Sprintf("R\t127.0.0.1\t%d", pc.LocalAddr().(*net.UDPAddr).Port)
}

// udpSource is the address datagrams from the program's UDP socket sock
// to 127.0.0.1 come from. An unbound socket is bound first, as its first
// send or connect would bind it (to its family's wildcard address and an
// ephemeral port), so that the address is known before any datagram.
func udpSource(sock int) (netip.AddrPort, error) {
	family, err := inetSocket(sock, unix.SOCK_DGRAM)
	if err != nil {
		return netip.AddrPort{}, err
	}
	sa, err := unix.Getsockname(sock)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if sockaddrPort(sa).Port() == 0 {
		var wildcard unix.Sockaddr = &unix.SockaddrInet4{}
		if family == unix.AF_INET6 {
			wildcard = &unix.SockaddrInet6{}
		}
		if err := unix.Bind(sock, wildcard); err != nil && err != unix.EINVAL { // EINVAL: bound meanwhile
			return netip.AddrPort{}, err
		}
		if sa, err = unix.Getsockname(sock); err != nil {
			return netip.AddrPort{}, err
		}
	}
	src := sockaddrPort(sa)
	if src.Addr().IsUnspecified() {
		src = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), src.Port())
	}
	return src, nil
}

// resolve answers getaddrinfo for a name the DNS feature sends to the
// target; other names resolve locally.
func (l *layerServer) resolve(ctx context.Context, name string) string {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	if !l.p.dnsRemote(q) {
		return "L"
	}
	addrs, err := l.p.ResolveRemote(ctx, name)
	if err != nil || len(addrs) == 0 {
		return "E\tnoname"
	}
	out := []string{"A"}
	for _, a := range addrs {
		// Name-based outgoing filters match connections to these.
		l.p.names.add(name, a)
		out = append(out, a.String())
	}
	return strings.Join(out, "\t")
}

// resQuery answers glibc's res_query (search false) and res_search from
// the target's DNS: glibc sends those queries with its internal socket
// calls, which no hook sees. res_search tries the target's search
// domains in glibc's order (the name as given first when it has at least
// ndots dots). The reply is "A", the answer's rcode and answer count,
// and the answer message in hex.
func (l *layerServer) resQuery(ctx context.Context, search bool, class, qtype uint16, name string) string {
	probe := new(dns.Msg)
	probe.SetQuestion(dns.Fqdn(name), qtype)
	if !l.p.dnsRemote(probe) {
		return "L"
	}
	names := []string{dns.Fqdn(name)}
	if r := l.p.hello.Resolver; search && !strings.HasSuffix(name, ".") {
		var withSearch []string
		for _, d := range r.Search {
			withSearch = append(withSearch, dns.Fqdn(name+"."+strings.TrimSuffix(d, ".")))
		}
		if strings.Count(name, ".") >= r.Ndots {
			names = append(names, withSearch...)
		} else {
			names = append(withSearch, names...)
		}
	}
	var best []byte // a NOERROR without answers beats an NXDOMAIN
	for _, n := range names {
		q := new(dns.Msg)
		q.SetQuestion(n, qtype)
		q.Question[0].Qclass = class
		packed, err := q.Pack()
		if err != nil {
			return "L"
		}
		a, err := l.p.DNS(ctx, packed)
		if err != nil {
			return errnoReply(err)
		}
		m := new(dns.Msg)
		if m.Unpack(a) != nil {
			continue
		}
		if m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0 {
			return dnsReply(a)
		}
		if best == nil || m.Rcode == dns.RcodeSuccess {
			best = a
		}
	}
	if best == nil {
		return "E\t" + strconv.Itoa(int(syscall.EIO))
	}
	return dnsReply(best)
}

// dnsReply is "A", rcode, answer count, and the message in hex.
func dnsReply(a []byte) string {
	m := new(dns.Msg)
	if err := m.Unpack(a); err != nil {
		return "E\t" + strconv.Itoa(int(syscall.EIO))
	}
	return fmt.Sprintf("A\t%d\t%d\t%s", m.Rcode, len(m.Answer), hex.EncodeToString(a))
}

func (l *layerServer) classify(path string, write bool) (fsfilter.Action, string) {
	if l.opts.FS == nil {
		return fsfilter.Local, path
	}
	return l.opts.FS.Classify(filepath.Clean(path), write)
}

// remoteRead classifies a path the program reads the metadata of: the
// target's path, or the answer for one the rules keep on this machine
// ("L") or hide (ENOENT).
func (l *layerServer) remoteRead(path string) (target, reply string, remote bool) {
	switch act, target := l.classify(path, false); act {
	case fsfilter.Local:
		return "", "L", false
	case fsfilter.NotFound:
		return "", "E\t" + strconv.Itoa(int(syscall.ENOENT)), false
	default:
		return target, "", true
	}
}

func (l *layerServer) stat(ctx context.Context, path string, follow bool) string {
	path, reply, remote := l.remoteRead(path)
	if !remote {
		return reply
	}
	fi, err := l.p.Stat(ctx, path, follow)
	if err != nil {
		return errnoReply(err)
	}
	if l.opts.View != nil {
		// The numbers fstat of the file opened (in the view) gives, as in
		// the sandbox: a program that compares a path's with an open
		// file's (df walking up to a mount point, cp's same-file check)
		// sees one file.
		fi.Dev, fi.Ino = l.opts.View.Identity(path, fi.Dev, fi.Ino)
	}
	// Then blocks, block size, rdev, the birth time and the statx mask
	// that says which fields the target's kernel filled (STATX_BTIME: there
	// is a birth time).
	blocks, blksize := fi.Space()
	mask := fi.Mask
	if mask == 0 {
		mask = protocol.StatxBasicStats // an agent before the mask
	}
	return fmt.Sprintf("I\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d",
		fi.Mode, fi.Size, fi.Mtime, fi.Atime, fi.Ctime, fi.Ino, fi.Dev, fi.Nlink, fi.UID, fi.GID,
		blocks, blksize, fi.Rdev, fi.Btime, mask)
}

// access answers the library's access (AX: follow, mode, path): "OK", an
// errno (the agent's answer: it opens the target's files for the
// program), or "L" for a local path.
func (l *layerServer) access(ctx context.Context, path string, mode uint32, follow bool) string {
	path, reply, remote := l.remoteRead(path)
	if !remote {
		return reply
	}
	if err := l.p.Access(ctx, path, mode, follow); err != nil {
		return errnoReply(err)
	}
	return "OK"
}

// xattr reads (X) or lists (Y) the extended attributes of a remote path:
// "V", then the value (or the names, each ending in a NUL as listxattr
// gives them) in hex: the layer decodes it without a library. The program
// gets ENODATA, ENOTSUP, ... as the target's file system answers.
func (l *layerServer) xattr(ctx context.Context, list, follow bool, name, path string) string {
	path, reply, remote := l.remoteRead(path)
	if !remote {
		return reply
	}
	var v []byte
	if list {
		names, err := l.p.Listxattr(ctx, path, follow)
		if err != nil {
			return errnoReply(err)
		}
		for _, n := range names {
			v = append(append(v, n...), 0)
		}
	} else {
		var err error
		if v, err = l.p.Getxattr(ctx, path, name, follow); err != nil {
			return errnoReply(err)
		}
	}
	return "V\t" + hex.EncodeToString(v)
}

// statfs describes the target's file system holding a remote path, in
// the order of struct statfs.
func (l *layerServer) statfs(ctx context.Context, path string) string {
	path, reply, remote := l.remoteRead(path)
	if !remote {
		return reply
	}
	s, err := l.p.Statfs(ctx, path)
	if err != nil {
		return errnoReply(err)
	}
	return fmt.Sprintf("Q\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d",
		s.Type, s.Bsize, s.Blocks, s.Bfree, s.Bavail, s.Files, s.Ffree, s.Fsid[0], s.Fsid[1], s.Namelen, s.Frsize, s.Flags)
}

// open hands the program a file descriptor with the remote file's
// content: a memfd snapshot for a file, a directory of empty entries with
// the remote names for a directory (readdir needs a real directory).
// Without the view, a remote file opened for writing goes through Copies.
func (l *layerServer) open(ctx context.Context, path string, flags int, mode uint32) (string, *os.File) {
	write := flags&(unix.O_WRONLY|unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_APPEND) != 0
	act, rpath := l.classify(path, write)
	switch act {
	case fsfilter.Local:
		return "L", nil
	case fsfilter.NotFound:
		return "E\t" + strconv.Itoa(int(syscall.ENOENT)), nil
	}
	if path == "/etc/hostname" && l.opts.Hostname != "" && !write {
		// The name the program sees everywhere else (the netstack engine
		// bind-mounts the same content).
		return l.memfd(path, strings.NewReader(l.opts.Hostname+"\n"))
	}
	if write && !l.opts.RemoteWrites {
		// A read-only remote path opened for writing: like upstream's
		// read mode, the write goes to the local file.
		return "L", nil
	}
	if l.opts.View != nil {
		f, err := l.opts.View.Open(rpath, flags&^unix.O_CLOEXEC, mode)
		if err != nil {
			return errnoReply(err), nil
		}
		return "F", f
	}
	if write {
		return l.openCopy(rpath, flags, mode)
	}
	fi, err := l.p.Stat(ctx, rpath, true)
	if err != nil {
		return errnoReply(err), nil
	}
	if fi.Mode&unix.S_IFMT == unix.S_IFDIR {
		f, err := l.dirSnapshot(ctx, rpath)
		if err != nil {
			return errnoReply(err), nil
		}
		return "F", f
	}
	if flags&unix.O_DIRECTORY != 0 {
		return "E\t" + strconv.Itoa(int(syscall.ENOTDIR)), nil
	}
	rf, err := l.p.OpenFile(ctx, rpath, unix.O_RDONLY, 0)
	if err != nil {
		return errnoReply(err), nil
	}
	defer rf.Close()
	return l.memfd(rpath, io.NewSectionReader(rf, 0, 1<<62))
}

// chdir answers the library's chdir of path: "L" when it is local, an
// errno, or an fd of the remote directory in the view, which the library
// fchdirs to (the kernel then resolves relative paths in the view, and
// the library's getcwd shows the view's path). Without the view there is
// no directory the process could be in: a snapshot would let relative
// opens silently read empty local files, so the chdir fails with
// EOPNOTSUPP, and the log says why.
func (l *layerServer) chdir(path string) (string, *os.File) {
	act, rpath := l.classify(path, false)
	switch act {
	case fsfilter.Local:
		return "L", nil
	case fsfilter.NotFound:
		return "E\t" + strconv.Itoa(int(syscall.ENOENT)), nil
	}
	if l.opts.View == nil {
		l.p.log.Warn("chdir into the target's directory needs the FUSE view (root); the program gets EOPNOTSUPP", "path", rpath)
		return "E\t" + strconv.Itoa(int(syscall.EOPNOTSUPP)), nil
	}
	f, err := l.opts.View.Open(rpath, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return errnoReply(err), nil
	}
	return "F", f
}

// openCopy opens a remote file for writing without the view: through
// Copies, never a local file of the same name.
func (l *layerServer) openCopy(path string, flags int, mode uint32) (string, *os.File) {
	if l.opts.Copies == nil {
		return "E\t" + strconv.Itoa(int(syscall.EOPNOTSUPP)), nil
	}
	f, err := l.opts.Copies.Open(path, flags&^unix.O_CLOEXEC, mode)
	if err != nil {
		return errnoReply(err), nil
	}
	return "F", f
}

// memfd returns a memory file holding r's content, positioned at 0.
func (l *layerServer) memfd(name string, r io.Reader) (string, *os.File) {
	fd, err := unix.MemfdCreate("mirrord:"+filepath.Base(name), unix.MFD_CLOEXEC)
	if err != nil {
		return errnoReply(err), nil
	}
	mf := os.NewFile(uintptr(fd), name)
	if _, err := io.Copy(mf, r); err != nil {
		mf.Close()
		return errnoReply(err), nil
	}
	if _, err := mf.Seek(0, io.SeekStart); err != nil {
		mf.Close()
		return errnoReply(err), nil
	}
	return "F", mf
}

// change runs unlink (U), mkdir (M) or rename (N) on the target when the
// paths are remote and writable there.
func (l *layerServer) change(ctx context.Context, op, a, b string) string {
	path := a
	if op != "N" {
		path = b
	}
	rpath, reply := l.writeTarget(path)
	if reply != "" {
		return reply
	}
	var err error
	switch op {
	case "U":
		err = l.p.Unlink(ctx, rpath, a == "1")
	case "M":
		mode, perr := strconv.ParseUint(a, 8, 32)
		if perr != nil {
			return "E\t" + strconv.Itoa(int(syscall.EINVAL))
		}
		err = l.p.Mkdir(ctx, rpath, uint32(mode))
	case "N":
		to, rto := l.classify(b, true)
		if to != fsfilter.Remote {
			// Across the local/remote boundary: as across file systems.
			return "E\t" + strconv.Itoa(int(syscall.EXDEV))
		}
		err = l.p.Rename(ctx, rpath, rto)
	}
	if err != nil {
		return errnoReply(err)
	}
	return "OK"
}

// writeTarget classifies a path the program changes: its remote path, or
// the reply when the change is not the target's ("L" to do it locally,
// ENOENT for a not_found path).
func (l *layerServer) writeTarget(path string) (rpath, reply string) {
	act, rpath := l.classify(path, true)
	switch {
	case act == fsfilter.Local:
		return "", "L"
	case act == fsfilter.NotFound:
		return "", "E\t" + strconv.Itoa(int(syscall.ENOENT))
	case !l.opts.RemoteWrites:
		return "", "L"
	}
	return rpath, ""
}

// modify runs setattr (J: follow, mode, uid, gid, atime, mtime, path;
// "-" leaves a field as it is, "now" is the target's clock), truncate (T:
// size, path), link (B: from, to) or symlink (A: target, path) on the
// target when the paths are remote and writable there.
func (l *layerServer) modify(ctx context.Context, op string, a []string) string {
	einval := "E\t" + strconv.Itoa(int(syscall.EINVAL))
	if len(a) < map[string]int{"J": 7, "T": 2, "B": 2, "A": 2}[op] {
		return einval
	}
	path := a[len(a)-1]
	if op == "B" {
		path = a[0]
	}
	rpath, reply := l.writeTarget(path)
	if reply != "" {
		return reply
	}
	var err error
	switch op {
	case "J":
		var attr protocol.SetAttr
		num := func(v string, bits int) (*uint64, bool) {
			if v == "-" {
				return nil, true
			}
			n, err := strconv.ParseUint(v, 10, bits)
			return &n, err == nil
		}
		tm := func(v string) (*int64, bool) {
			if v == "-" {
				return nil, true
			}
			if v == "now" {
				n := int64(protocol.TimeNow)
				return &n, true
			}
			n, err := strconv.ParseInt(v, 10, 64)
			return &n, err == nil
		}
		mode, ok1 := num(a[1], 32)
		uid, ok2 := num(a[2], 32)
		gid, ok3 := num(a[3], 32)
		at, ok4 := tm(a[4])
		mt, ok5 := tm(a[5])
		if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
			return einval
		}
		for _, x := range []struct {
			v   *uint64
			dst **uint32
		}{{mode, &attr.Mode}, {uid, &attr.UID}, {gid, &attr.GID}} {
			if x.v != nil {
				v := uint32(*x.v)
				*x.dst = &v
			}
		}
		attr.Atime, attr.Mtime = at, mt
		err = l.p.Setattr(ctx, rpath, a[0] == "1", attr)
	case "T":
		size, perr := strconv.ParseInt(a[0], 10, 64)
		if perr != nil {
			return einval
		}
		err = l.p.Truncate(ctx, rpath, size)
	case "B":
		to, rto := l.classify(a[1], true)
		if to != fsfilter.Remote {
			return "E\t" + strconv.Itoa(int(syscall.EXDEV))
		}
		err = l.p.Link(ctx, rpath, rto)
	case "A":
		err = l.p.Symlink(ctx, a[0], rpath)
	}
	if err != nil {
		return errnoReply(err)
	}
	return "OK"
}

// writeOps are the file operations that change the target.
var writeOps = map[protocol.FileOp]bool{
	protocol.FileUnlink: true, protocol.FileMkdir: true, protocol.FileRename: true, protocol.FileTruncate: true,
	protocol.FileSetattr: true, protocol.FileLink: true, protocol.FileSymlink: true,
}

// sandboxFile serves the file calls of a Go or static child in the
// sandbox (layer-exec), whose own supervisor has already classified the
// paths with the same rules (FC gives it feature.fs): FR runs one file
// operation given as JSON and answers "FJ" and the reply's JSON; FO
// (flags, mode, path) opens a file and passes its fd: a FUSE-view file
// when there is a view, else a read-only copy.
func (l *layerServer) sandboxFile(ctx context.Context, op string, a []string) (string, *os.File) {
	erofs := "E\t" + strconv.Itoa(int(syscall.EROFS))
	einval := "E\t" + strconv.Itoa(int(syscall.EINVAL))
	switch op {
	case "FC":
		b, err := json.Marshal(l.p.cfg.Feature.FS)
		if err != nil || l.opts.FS == nil {
			return "FC\t{\"mode\":\"local\"}", nil
		}
		return "FC\t" + string(b), nil
	case "FR":
		var req protocol.FileRequest
		if len(a) < 1 || json.Unmarshal([]byte(a[0]), &req) != nil || req.Op == protocol.FileOpen {
			return einval, nil
		}
		if writeOps[req.Op] && !l.opts.RemoteWrites {
			return erofs, nil
		}
		r, err := l.p.fileRequest(ctx, &req)
		if err != nil {
			return errnoReply(err), nil
		}
		b, err := json.Marshal(r)
		if err != nil {
			return errnoReply(err), nil
		}
		return "FJ\t" + string(b), nil
	}
	// FO
	if len(a) < 3 {
		return einval, nil
	}
	flags, err1 := strconv.Atoi(a[0])
	mode, err2 := strconv.ParseUint(a[1], 8, 32)
	if err1 != nil || err2 != nil {
		return einval, nil
	}
	path := a[2]
	write := flags&(unix.O_WRONLY|unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_APPEND) != 0
	switch {
	case write && !l.opts.RemoteWrites:
		return erofs, nil
	case l.opts.View != nil:
		f, err := l.opts.View.Open(path, flags&^unix.O_CLOEXEC, uint32(mode))
		if err != nil {
			return errnoReply(err), nil
		}
		return "F", f
	case write:
		return l.openCopy(path, flags, uint32(mode))
	}
	rf, err := l.p.OpenFile(ctx, path, unix.O_RDONLY, 0)
	if err != nil {
		return errnoReply(err), nil
	}
	defer rf.Close()
	return l.memfd(path, io.NewSectionReader(rf, 0, 1<<62))
}

func (l *layerServer) dirSnapshot(ctx context.Context, path string) (*os.File, error) {
	entries, err := l.p.ReadDir(ctx, path)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.tmpDir == "" {
		l.tmpDir, err = os.MkdirTemp("", "mirrord-dirs-")
	}
	root := l.tmpDir
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(root, "d")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.Name == "." || e.Name == ".." || strings.Contains(e.Name, "/") {
			continue
		}
		p := filepath.Join(dir, e.Name)
		switch e.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			err = os.Mkdir(p, 0o755)
		case unix.S_IFLNK:
			err = os.Symlink(".", p)
		default:
			var f *os.File
			if f, err = os.Create(p); err == nil {
				f.Close()
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return os.Open(dir)
}

// LayerClient is the Go side of the layer protocol, for `mirrord
// layer-exec`: a Go or static program started by a preloaded process runs
// in a netstack sandbox served through the parent session's proxy.
type LayerClient struct{ Sock string }

func (c LayerClient) call(ctx context.Context, req string) ([]string, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, req+"\n"); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return nil, err
	}
	return replyFields(line)
}

// connect opens a connection to the session for one request, bounded by
// ctx's deadline.
func (c LayerClient) connect(ctx context.Context) (*net.UnixConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Sock)
	if err != nil {
		return nil, fmt.Errorf("mirrord session socket: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	return conn.(*net.UnixConn), nil
}

// replyFields splits a reply line into its fields; "E" and an errno (or
// a message) is the error it stands for.
func replyFields(line string) ([]string, error) {
	f := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
	if f[0] == "E" && len(f) > 1 {
		if n, err := strconv.Atoi(f[1]); err == nil {
			return nil, syscall.Errno(n)
		}
		return nil, errors.New(f[1])
	}
	return f, nil
}

// FSConfig is the session's feature.fs (mode "local" when it serves no
// files), for a sandbox that classifies paths itself.
func (c LayerClient) FSConfig(ctx context.Context) (config.FSConfig, error) {
	var fs config.FSConfig
	f, err := c.call(ctx, "FC")
	if err != nil {
		return fs, err
	}
	if len(f) < 2 || f[0] != "FC" {
		return fs, fmt.Errorf("unexpected answer %q", strings.Join(f, " "))
	}
	return fs, json.Unmarshal([]byte(f[1]), &fs)
}

// File runs one file operation (not open) on the target through the
// session, with the target's errno as the error.
func (c LayerClient) File(ctx context.Context, req *protocol.FileRequest) (*protocol.FileReply, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	f, err := c.call(ctx, "FR\t"+string(b))
	if err != nil {
		return nil, err
	}
	if len(f) < 2 || f[0] != "FJ" {
		return nil, fmt.Errorf("unexpected answer %q", strings.Join(f, " "))
	}
	var r protocol.FileReply
	return &r, json.Unmarshal([]byte(f[1]), &r)
}

// OpenFile opens a file of the target through the session: the file it
// passes is a FUSE-view file of the session's (reads and writes reach the
// target), or a read-only copy.
func (c LayerClient) OpenFile(ctx context.Context, path string, flags int, perm uint32) (*os.File, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "FO\t%d\t%o\t%s\n", flags, perm, path); err != nil {
		return nil, err
	}
	buf, oob := make([]byte, 256), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	var fd = -1
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) > 0 {
		if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) > 0 {
			fd = fds[0]
			for _, extra := range fds[1:] {
				unix.Close(extra)
			}
		}
	}
	reply, err := replyFields(string(buf[:n]))
	if err == nil && reply[0] == "F" && fd >= 0 {
		unix.CloseOnExec(fd)
		return os.NewFile(uintptr(fd), path), nil
	}
	if fd >= 0 {
		unix.Close(fd)
	}
	if err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("unexpected answer %q", strings.Join(reply, " "))
}

// Listening tells the session that the program serves on addr, as the
// preload's listen hook does, so that the target's traffic for the port
// reaches it.
func (c LayerClient) Listening(ctx context.Context, addr netip.AddrPort) error {
	_, err := c.call(ctx, fmt.Sprintf("P\t%s\t%d", addr.Addr(), addr.Port()))
	return err
}

// ConnectRoute asks the session about a sandboxed program's connect to dst
// (Proxy.ConnectRoute), for goshim.WithConnectCheck.
func (c LayerClient) ConnectRoute(ctx context.Context, dst netip.AddrPort, udp func() (bool, bool)) (local bool, errno syscall.Errno) {
	isUDP, ok := udp()
	if !ok {
		return false, 0
	}
	proto := "tcp"
	if isUDP {
		proto = "udp"
	}
	f, err := c.call(ctx, fmt.Sprintf("LC\t%s\t%d\t%s", dst.Addr().Unmap(), dst.Port(), proto))
	var e syscall.Errno
	switch {
	case errors.As(err, &e):
		return false, e // the session's answer (replyFields made it an error)
	case err != nil:
		return false, 0 // no answer: the sandbox's network decides
	}
	return len(f) == 1 && f[0] == "L", 0
}

// OriginalPeer asks the session for the target's client of the connection
// from from (mirrord's end on loopback) to the program's port, as the
// preload's accept does.
func (c LayerClient) OriginalPeer(ctx context.Context, from netip.AddrPort, port uint16) (netip.AddrPort, bool) {
	f, err := c.call(ctx, fmt.Sprintf("I\t%s\t%d\t%d", from.Addr().Unmap(), from.Port(), port))
	if err != nil || len(f) != 3 || f[0] != "A" {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(f[1], f[2]))
	return ap, err == nil
}

// Hold tells the session that this process is part of the program until
// the returned connection is closed (or the process ends).
func (c LayerClient) Hold(ctx context.Context) (io.Closer, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Sock)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write([]byte("W\n")); err != nil {
		conn.Close()
		return nil, err
	}
	buf := make([]byte, 3)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "OK\n" {
		conn.Close()
		return nil, fmt.Errorf("session hold: the session did not take the process (%q, %v)", buf, err)
	}
	conn.SetReadDeadline(time.Time{})
	return conn, nil
}

// Session returns the hostname and the target's resolver settings.
func (c LayerClient) Session(ctx context.Context) (hostname string, ndots int, search []string, err error) {
	f, err := c.call(ctx, "H")
	if err != nil {
		return "", 0, nil, err
	}
	if len(f) < 3 || f[0] != "H" {
		return "", 0, nil, fmt.Errorf("mirrord session socket: unexpected reply %q", f)
	}
	ndots, _ = strconv.Atoi(f[2])
	return f[1], ndots, f[3:], nil
}

func (c LayerClient) dial(ctx context.Context, network string, dst netip.AddrPort) (net.Conn, error) {
	proto, typ := "tcp", unix.SOCK_STREAM
	if network == "udp" {
		proto, typ = "udp", unix.SOCK_DGRAM
	}
	// The socket goes with the request, as the preload's does: the
	// session connects it (TCP) or takes datagrams from it only (UDP).
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	sock := os.NewFile(uintptr(fd), proto)
	defer sock.Close()
	f, err := c.callWith(ctx, fmt.Sprintf("C\t%s\t%s\t%d", proto, dst.Addr().Unmap(), dst.Port()), fd)
	if err != nil {
		return nil, err
	}
	switch {
	case f[0] == "Y" && typ == unix.SOCK_STREAM:
		return net.FileConn(sock)
	case f[0] == "R" && len(f) == 3 && typ == unix.SOCK_DGRAM:
		relay, err := netip.ParseAddrPort(net.JoinHostPort(f[1], f[2]))
		if err != nil || !relay.Addr().Is4() {
			return nil, fmt.Errorf("mirrord session socket: unexpected reply %q", f)
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(relay.Port()), Addr: relay.Addr().As4()}); err != nil {
			return nil, err
		}
		return net.FileConn(sock)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, dst.String())
}

// callWith is call with the descriptor fd passed along with the request.
func (c LayerClient) callWith(ctx context.Context, req string, fd int) ([]string, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if _, _, err := conn.WriteMsgUnix([]byte(req+"\n"), unix.UnixRights(fd), nil); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return nil, err
	}
	return replyFields(line)
}

// RelayUnix is Proxy.RelayUnix through the session socket, for a
// sandboxed program's connect to a unix socket path.
func (c LayerClient) RelayUnix(ctx context.Context, path string) (string, error) {
	if strings.ContainsAny(path, "\t\n") {
		return "", nil // the layer protocol cannot carry it; the preload keeps such paths local too
	}
	f, err := c.call(ctx, "C\tunix\t"+path)
	if err != nil {
		return "", err
	}
	if f[0] == "R" && len(f) == 2 {
		return f[1], nil
	}
	return "", nil
}

// DialTCP, DialUDP and DNS make LayerClient a netstack handler.
func (c LayerClient) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return c.dial(ctx, "tcp", dst)
}

func (c LayerClient) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return c.dial(ctx, "udp", dst)
}

func (c LayerClient) DNS(ctx context.Context, query []byte) ([]byte, error) {
	f, err := c.call(ctx, "D\t"+base64.StdEncoding.EncodeToString(query))
	if err != nil {
		return nil, err
	}
	if len(f) != 2 || f[0] != "A" {
		return nil, fmt.Errorf("mirrord session socket: unexpected DNS reply")
	}
	return base64.StdEncoding.DecodeString(f[1])
}
