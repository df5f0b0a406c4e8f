package goshim

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This machine's network, for the program in the sandbox.
//
// The sandbox's own network namespace is what sends the program's traffic
// to the target: every destination but loopback is routed into the TUN
// device. Loopback, though, means *this machine* to the program's user:
// its servers must answer on this machine's localhost, it must reach the
// database on this machine's 127.0.0.1:5432, a debugger must be reachable.
// So the supervisor watches the calls where a program says which network
// it means (bind, connect, listen, sendto with a destination) and, when it
// means this machine, swaps the program's socket for one made here, in
// mirrord's network namespace (the technique of bypass4netns): it takes a
// copy of the program's socket (pidfd_getfd), makes a socket of the same
// family, type and protocol with the options the program set, and installs
// it under the same descriptor number (SECCOMP_IOCTL_NOTIF_ADDFD with
// SECCOMP_ADDFD_FLAG_SETFD). From then on the kernel does everything: the
// data path has no mirrord in it at all.
//
// Which calls mean this machine:
//   - bind to a loopback address (any port), to a wildcard address with a
//     port, or to an address of this machine: the bind runs here, so the
//     program gets EADDRINUSE when the port is taken here. A wildcard bind
//     to port 0 is left in the sandbox until the socket shows what it is
//     for: listen makes it a server here; a first datagram to loopback
//     moves it here; otherwise it is a client of the target.
//   - connect, or sendto, to a loopback address (127/8, ::1, v4-mapped,
//     and the unspecified address, which Linux takes for loopback).
//   - connect to an address the session makes connections to from this
//     machine anyway (WithConnectCheck: the outgoing filter keeps it
//     local): the kernel connects it from here, as it would without
//     mirrord, rather than mirrord relaying it from the TUN device (make
//     bench: loopback speed, against 0.4 of it through gVisor).
//   - listen on a socket that is not bound to a sandbox address.
//   - bind, connect or sendto to an abstract unix address (those are per
//     network namespace). Path names are the same files in the sandbox.
//
// A socket made here stays here: a UDP socket bound to a wildcard address
// with a port (a server) that later sends to a remote address sends from
// this machine, and a TCP socket bound to such an address before it
// connects to a remote address connects from this machine. sendmsg and
// sendmmsg with a destination are not intercepted.
//
// The program's servers and loopback connections being this machine's
// sockets, the socket tables it reads under /proc (/proc/net/tcp and the
// like, for itself or another process of the sandbox) are this machine's
// too: an open of one is answered with mirrord's own. Programs look
// their peers up there: dlv, for one, accepts a connection to its API
// only from a socket of the same user listed in /proc/net/tcp. So every
// open is seen by the supervisor, even without remote files (make bench:
// 34 µs added per open).
//
// Listening sockets are reported (WithListenHook) once listen succeeded,
// so incoming traffic from the target reaches the program's server on
// this machine's loopback, as under the preload.

// Listener is a socket the program listens on, on this machine.
type Listener struct {
	Addr netip.AddrPort // the address it is bound to (wildcard, loopback or other)
}

// WithListenHook calls fn for every socket the program listens on.
// fn must not block.
func WithListenHook(fn func(Listener)) Option {
	return func(o *options) { o.onListen = fn }
}

// sockaddr is a socket address read from the program's memory.
type sockaddr struct {
	raw    []byte
	family int
	ap     netip.AddrPort // AF_INET, AF_INET6
	abs    bool           // AF_UNIX: an abstract name
}

func parseSockaddr(raw []byte) (sockaddr, bool) {
	if len(raw) < 2 {
		return sockaddr{}, false
	}
	sa := sockaddr{raw: raw, family: int(binary.NativeEndian.Uint16(raw))}
	switch sa.family {
	case unix.AF_INET:
		if len(raw) < unix.SizeofSockaddrInet4 {
			return sa, false
		}
		ip := netip.AddrFrom4([4]byte(raw[4:8]))
		sa.ap = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(raw[2:4]))
	case unix.AF_INET6:
		if len(raw) < unix.SizeofSockaddrInet6 {
			return sa, false
		}
		ip := netip.AddrFrom16([16]byte(raw[8:24]))
		sa.ap = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(raw[2:4]))
	case unix.AF_UNIX:
		sa.abs = len(raw) > 2 && raw[2] == 0
	}
	return sa, true
}

// inet reports whether the address is IPv4 or IPv6.
func (sa sockaddr) inet() bool { return sa.family == unix.AF_INET || sa.family == unix.AF_INET6 }

// loopback: a destination on this machine's loopback. Linux takes the
// unspecified address as a destination for loopback too.
func (sa sockaddr) loopback() bool {
	ip := sa.ap.Addr().Unmap()
	return sa.inet() && (ip.IsLoopback() || ip.IsUnspecified())
}

// inSandbox: one of the sandbox's own addresses.
func inSandbox(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip == SandboxAddr4 || ip == SandboxAddr6 || ip == DNSAddr4 || ip == DNSAddr6
}

// place says where a socket belongs.
type place int

const (
	placeSandbox place = iota // leave it: the kernel runs the call in the sandbox
	placeHost                 // make it a socket of this machine
	placeLater                // leave it for now; listen or a send decides
)

// bindPlace decides where a bind to sa belongs.
func bindPlace(sa sockaddr) place {
	switch {
	case sa.family == unix.AF_UNIX:
		if sa.abs {
			return placeHost
		}
		return placeSandbox // a path: the same file here and there
	case !sa.inet():
		return placeSandbox
	}
	ip := sa.ap.Addr().Unmap()
	switch {
	case ip.IsLoopback():
		return placeHost
	case ip.IsUnspecified():
		if sa.ap.Port() == 0 {
			return placeLater
		}
		return placeHost
	case inSandbox(ip):
		return placeSandbox
	}
	return placeHost // an address of this machine (or none: EADDRNOTAVAIL, as without mirrord)
}

// sendPlace decides where a connect or sendto to sa belongs.
func sendPlace(sa sockaddr) place {
	if sa.loopback() || sa.family == unix.AF_UNIX && sa.abs {
		return placeHost
	}
	return placeSandbox
}

// hostNet is the supervisor's part that moves sockets to this machine.
type hostNet struct {
	mu       sync.Mutex
	fresh    map[sockKind]map[sockopt][]byte // option values of fresh sockets, per kind
	listener int                             // the seccomp listener
	cookie   uint64                          // SO_NETNS_COOKIE of mirrord's network namespace
	onListen func(Listener)
	peers    *peerState   // WithIncomingPeers; nil without it (peers.go)
	connect  ConnectCheck // WithConnectCheck; nil without it
	off      bool         // the kernel cannot tell the namespaces apart: every call runs as the program made it
	s        *supervisor
}

// newHostNet reads the cookie of mirrord's network namespace, by which a
// socket made here is told from one made in the sandbox (Linux 5.14).
// Where that fails it returns the error and a hostNet that is off.
func newHostNet(listener int, onListen func(Listener)) (*hostNet, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return &hostNet{listener: listener, off: true}, err
		}
	}
	defer unix.Close(fd)
	h := &hostNet{listener: listener, onListen: onListen, off: true}
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return h, fmt.Errorf("reading the network namespace cookie (Linux 5.14 or later): %w", err)
	}
	h.cookie, h.off = cookie, false
	return h, nil
}

// progSocket is a copy of one of the program's sockets.
type progSocket struct {
	fd                 int // ours, close-on-exec
	tid, num           int // the thread that made the call, and its descriptor number
	family, typ, proto int
	host               bool     // made in mirrord's namespace
	local              sockaddr // its local address; family 0 when it cannot be read
	bound              bool     // has a local address (explicitly or by an earlier call)
}

// onSandboxAddr: bound to one of the sandbox's own addresses.
func (p *progSocket) onSandboxAddr() bool {
	return p.local.inet() && inSandbox(p.local.ap.Addr())
}

func (p *progSocket) close() { unix.Close(p.fd) }

// take copies the program's socket num. ok is false when num is not a
// socket of a family mirrord moves (or cannot be read): the call then runs
// untouched.
func (h *hostNet) take(tid, num int) (*progSocket, bool) {
	pidfd, err := pidfdOf(tid)
	if err != nil {
		return nil, false
	}
	fd, err := unix.PidfdGetfd(pidfd, num, 0)
	unix.Close(pidfd)
	if err != nil {
		return nil, false
	}
	p := &progSocket{fd: fd, tid: tid, num: num}
	if p.family, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		unix.Close(fd)
		return nil, false
	}
	p.typ, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	p.proto, _ = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	switch {
	case p.family != unix.AF_INET && p.family != unix.AF_INET6 && p.family != unix.AF_UNIX,
		p.typ != unix.SOCK_STREAM && p.typ != unix.SOCK_DGRAM && p.typ != unix.SOCK_SEQPACKET:
		unix.Close(fd)
		return nil, false
	}
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	p.host = err == nil && cookie == h.cookie
	if local, ok := sockName(fd); ok {
		p.local = local
		switch {
		case local.inet():
			p.bound = local.ap.Port() != 0 || !local.ap.Addr().IsUnspecified()
		case local.family == unix.AF_UNIX:
			p.bound = len(local.raw) > 2
		}
	}
	return p, true
}

// sockName returns the local address of socket fd, raw and parsed.
func sockName(fd int) (sockaddr, bool) {
	var raw [unix.SizeofSockaddrAny]byte
	n := uint32(len(raw))
	if _, _, errno := unix.Syscall(unix.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&raw[0])), uintptr(unsafe.Pointer(&n))); errno != 0 {
		return sockaddr{}, false
	}
	return parseSockaddr(raw[:min(int(n), len(raw))])
}

// pidfdOf opens a pidfd for the process of thread tid.
func pidfdOf(tid int) (int, error) {
	pidfd, err := unix.PidfdOpen(tid, unix.PIDFD_THREAD)
	if err != nil { // before Linux 6.9: a pidfd names a thread group leader
		pidfd, err = unix.PidfdOpen(threadGroup(tid), 0)
	}
	return pidfd, err
}

// threadGroup returns the process id of thread tid.
func threadGroup(tid int) int {
	f, err := os.Open("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return tid
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Tgid:"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return n
			}
		}
	}
	return tid
}

// hostSocket makes the socket of this machine that stands in for p: the
// same family, type, protocol, file status flags and socket options (a
// server's: all of the lists; a client's, see optsSocket).
func (h *hostNet) hostSocket(p *progSocket, server bool) (int, error) {
	fd, err := unix.Socket(p.family, p.typ|unix.SOCK_CLOEXEC, p.proto)
	if err != nil {
		return -1, err
	}
	if fl, err := unix.FcntlInt(uintptr(p.fd), unix.F_GETFL, 0); err == nil && fl&unix.O_NONBLOCK != 0 {
		unix.SetNonblock(fd, true)
	}
	copyOptions(p.fd, fd, h.defaults(p, fd), p.family, p.typ, server || p.typ != unix.SOCK_STREAM)
	return fd, nil
}

// sockKind keys the option defaults of fresh sockets.
type sockKind struct{ family, typ, proto int }

// defaults returns the option values of a fresh socket like fresh (which
// is one), read once per kind: reading them is half of copyOptions.
func (h *hostNet) defaults(p *progSocket, fresh int) map[sockopt][]byte {
	k := sockKind{p.family, p.typ, p.proto}
	h.mu.Lock()
	defer h.mu.Unlock()
	if d, ok := h.fresh[k]; ok {
		return d
	}
	d := map[sockopt][]byte{}
	var b [64]byte
	for _, list := range optionLists(p.family, p.typ, true) {
		for _, o := range list {
			if n, err := getsockoptRaw(fresh, o, b[:]); err == nil {
				d[o] = append([]byte(nil), b[:n]...)
			}
		}
	}
	if h.fresh == nil {
		h.fresh = map[sockKind]map[sockopt][]byte{}
	}
	h.fresh[k] = d
	return d
}

// sockopt is a socket option copied to the socket that replaces the
// program's.
type sockopt struct{ level, name int }

// The options copied. A client's stream socket (connect: the frequent
// case, whose cost is per connection) gets the ones a client sets before
// it connects; servers (bind, listen) and datagram sockets, made once,
// get the rest too.
var (
	optsSocket = []sockopt{
		{unix.SOL_SOCKET, unix.SO_REUSEADDR}, {unix.SOL_SOCKET, unix.SO_REUSEPORT},
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE}, {unix.SOL_SOCKET, unix.SO_LINGER},
		{unix.SOL_SOCKET, unix.SO_RCVBUF}, {unix.SOL_SOCKET, unix.SO_SNDBUF},
		{unix.SOL_SOCKET, unix.SO_RCVTIMEO}, {unix.SOL_SOCKET, unix.SO_SNDTIMEO},
		{unix.SOL_SOCKET, unix.SO_PRIORITY}, {unix.SOL_SOCKET, unix.SO_MARK},
	}
	optsTCP = []sockopt{
		{unix.IPPROTO_TCP, unix.TCP_NODELAY}, {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL}, {unix.IPPROTO_TCP, unix.TCP_KEEPCNT},
		{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT}, {unix.IPPROTO_TCP, unix.TCP_FASTOPEN_CONNECT},
		{unix.IPPROTO_TCP, unix.TCP_CONGESTION}, {unix.IPPROTO_TCP, unix.TCP_MAXSEG},
	}
	optsIP   = []sockopt{{unix.IPPROTO_IP, unix.IP_TOS}, {unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT}}
	optsIPv6 = []sockopt{{unix.IPPROTO_IPV6, unix.IPV6_V6ONLY}, {unix.IPPROTO_IPV6, unix.IPV6_TCLASS}}

	serverSocket = []sockopt{
		{unix.SOL_SOCKET, unix.SO_BROADCAST}, {unix.SOL_SOCKET, unix.SO_OOBINLINE},
		{unix.SOL_SOCKET, unix.SO_RCVLOWAT}, {unix.SOL_SOCKET, unix.SO_PASSCRED},
		{unix.SOL_SOCKET, unix.SO_TIMESTAMP}, {unix.SOL_SOCKET, unix.SO_TIMESTAMPNS},
	}
	serverTCP = []sockopt{
		{unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT}, {unix.IPPROTO_TCP, unix.TCP_FASTOPEN},
		{unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT}, {unix.IPPROTO_TCP, unix.TCP_CORK},
		{unix.IPPROTO_TCP, unix.TCP_QUICKACK},
	}
	serverIP = []sockopt{
		{unix.IPPROTO_IP, unix.IP_TTL}, {unix.IPPROTO_IP, unix.IP_PKTINFO},
		{unix.IPPROTO_IP, unix.IP_RECVTOS}, {unix.IPPROTO_IP, unix.IP_RECVTTL},
		{unix.IPPROTO_IP, unix.IP_RECVERR}, {unix.IPPROTO_IP, unix.IP_MTU_DISCOVER},
		{unix.IPPROTO_IP, unix.IP_FREEBIND}, {unix.IPPROTO_IP, unix.IP_MULTICAST_TTL},
		{unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP}, {unix.IPPROTO_IP, unix.IP_RECVORIGDSTADDR},
	}
	serverIPv6 = []sockopt{
		{unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO}, {unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS},
		{unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS}, {unix.IPPROTO_IPV6, unix.IPV6_RECVERR},
		{unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER}, {unix.IPPROTO_IPV6, unix.IPV6_FREEBIND},
		{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS}, {unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP},
		{unix.IPPROTO_IPV6, unix.IPV6_RECVORIGDSTADDR},
	}
)

// optionLists are the options copied for a socket of family and typ; all
// of them for a server.
func optionLists(family, typ int, server bool) [][]sockopt {
	lists := [][]sockopt{optsSocket}
	if server {
		lists = append(lists, serverSocket)
	}
	if typ == unix.SOCK_STREAM && family != unix.AF_UNIX {
		lists = append(lists, optsTCP)
		if server {
			lists = append(lists, serverTCP)
		}
	}
	switch {
	case family == unix.AF_INET:
		lists = append(lists, optsIP)
		if server {
			lists = append(lists, serverIP)
		}
	case family == unix.AF_INET6:
		lists = append(lists, optsIPv6)
		if server {
			lists = append(lists, serverIPv6)
		}
	}
	return lists
}

// copyOptions sets on to the options of from that differ from defaults
// (a fresh socket's, which to is). Only differences: setting a buffer size that
// merely equals the default would switch off the kernel's buffer
// autotuning. (The kernel doubles SO_RCVBUF/SO_SNDBUF on set and reports
// the doubled value, hence the halving.) Options the kernel refuses here
// (e.g. SO_MARK without CAP_NET_ADMIN) are left as they are.
func copyOptions(from, to int, defaults map[sockopt][]byte, family, typ int, server bool) {
	var a [64]byte
	for _, list := range optionLists(family, typ, server) {
		for _, o := range list {
			def, ok := defaults[o]
			if !ok {
				continue
			}
			na, err := getsockoptRaw(from, o, a[:])
			if err != nil || bytes.Equal(a[:na], def) {
				continue
			}
			v := a[:na]
			if o.level == unix.SOL_SOCKET && (o.name == unix.SO_RCVBUF || o.name == unix.SO_SNDBUF) && na == 4 {
				half := binary.NativeEndian.Uint32(v) / 2
				v = binary.NativeEndian.AppendUint32(nil, half)
			}
			setsockoptRaw(to, o, v)
		}
	}
}

func getsockoptRaw(fd int, o sockopt, buf []byte) (int, error) {
	n := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(o.level), uintptr(o.name),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func setsockoptRaw(fd int, o sockopt, v []byte) error {
	if len(v) == 0 {
		return nil
	}
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(o.level), uintptr(o.name),
		uintptr(unsafe.Pointer(&v[0])), uintptr(len(v)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func bindRaw(fd int, raw []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&raw[0])), uintptr(len(raw)))
	if errno != 0 {
		return errno
	}
	return nil
}

// install puts host in the program under p's descriptor number, keeping
// its close-on-exec flag (a socket passed to a child on purpose must stay
// passed). The program's own socket is closed by the swap.
func (h *hostNet) install(id uint64, p *progSocket, host int) error {
	a := seccompNotifAddfd{ID: id, Flags: unix.SECCOMP_ADDFD_FLAG_SETFD, Srcfd: uint32(host), Newfd: uint32(p.num)}
	if fdCloexec(p.tid, p.num) {
		a.NewfdFlags = unix.O_CLOEXEC
	}
	_, err := ioctlPtr(h.listener, unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&a))
	return err
}

// fdCloexec reads the close-on-exec flag of a descriptor of thread tid.
func fdCloexec(tid, num int) bool {
	// Raw calls: os.ReadFile's fstat and growing reads cost as much again.
	fd, err := unix.Open("/proc/"+strconv.Itoa(tid)+"/fdinfo/"+strconv.Itoa(num), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return true
	}
	var buf [512]byte
	n, err := unix.Read(fd, buf[:])
	unix.Close(fd)
	if err != nil || n <= 0 {
		return true
	}
	for line := range strings.Lines(string(buf[:n])) {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			fl, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err != nil || fl&unix.O_CLOEXEC != 0
		}
	}
	return true
}

// move makes p a socket of this machine, bound as it was bound in the
// sandbox (an address the sandbox gave it, such as a port picked for a
// wildcard bind, is given again where this machine has it free). It
// returns the new socket, already installed in the program.
func (h *hostNet) move(id uint64, p *progSocket, server bool) (int, error) {
	host, err := h.hostSocket(p, server)
	if err != nil {
		return -1, err
	}
	if p.bound {
		if err := bindRaw(host, p.local.raw); err != nil && p.local.inet() && p.local.ap.Port() != 0 {
			// The sandbox's pick is taken here: any port will do.
			any := append([]byte(nil), p.local.raw...)
			any[2], any[3] = 0, 0
			bindRaw(host, any)
		}
	}
	if err := h.install(id, p, host); err != nil {
		unix.Close(host)
		return -1, err
	}
	// Event loops (Go's, mio's, libuv's) register a stream socket after
	// its connect or listen; a datagram socket, or one bound earlier, may
	// be registered already.
	if p.typ != unix.SOCK_STREAM || p.bound {
		carryEpoll(p, host)
	}
	return host, nil
}

// carryEpoll adds host to every epoll instance of the program that
// watches p, with the same events and data. A socket that is moved after
// the program registered it (a UDP socket bound to port 0, then used to
// send to this machine) would otherwise never wake the program's event
// loop: an epoll entry is tied to the file it was made for. The entry is
// made through our descriptor of the epoll instance, under our number for
// host; the program's epoll_ctl(DEL) on its own number then misses it
// (Go ignores that error), and the kernel removes it when the program
// closes the socket for good.
func carryEpoll(p *progSocket, host int) {
	var st unix.Stat_t
	if unix.Fstat(p.fd, &st) != nil {
		return
	}
	dir := "/proc/" + strconv.Itoa(p.tid) + "/fdinfo/"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	want := "tfd: " + strconv.Itoa(p.num) + " "
	ino := " ino:" + strconv.FormatUint(st.Ino, 16)
	var pidfd = -1
	defer func() {
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
	}()
	for _, e := range ents {
		b, err := os.ReadFile(dir + e.Name())
		if err != nil || !bytes.Contains(b, []byte("tfd:")) {
			continue
		}
		for line := range strings.Lines(string(b)) {
			// tfd:        5 events:       19 data:     7f0c... pos:0 ino:2d7 sdev:8
			f := strings.Fields(line)
			if len(f) < 6 || f[0] != "tfd:" || strings.Join(f[:2], " ")+" " != want || !strings.Contains(line, ino+" ") {
				continue
			}
			events, err1 := strconv.ParseUint(f[3], 16, 32)
			data, err2 := strconv.ParseUint(f[5], 16, 64)
			num, err3 := strconv.Atoi(e.Name())
			if err1 != nil || err2 != nil || err3 != nil {
				continue
			}
			if pidfd < 0 {
				if pidfd, err = pidfdOf(p.tid); err != nil {
					return
				}
			}
			ep, err := unix.PidfdGetfd(pidfd, num, 0)
			if err != nil {
				continue
			}
			ev := unix.EpollEvent{Events: uint32(events)}
			binary.NativeEndian.PutUint64((*[8]byte)(unsafe.Pointer(&ev.Fd))[:], data)
			unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, host, &ev)
			unix.Close(ep)
		}
	}
}

// report tells the listen hook about a listening socket of this machine,
// and notes a wildcard one's port for getpeername (peers.go).
func (h *hostNet) report(fd int) {
	sa, ok := sockName(fd)
	if !ok || !sa.inet() {
		return
	}
	if h.peers != nil && sa.ap.Addr().IsUnspecified() {
		h.peers.addServer(sa.ap.Port())
	}
	if h.onListen != nil {
		h.onListen(Listener{Addr: netip.AddrPortFrom(sa.ap.Addr().Unmap(), sa.ap.Port())})
	}
}

// socketTablePath matches the socket tables of /proc: for the reader
// itself (net, self/net, thread-self/net) or for a process or thread.
var socketTablePath = regexp.MustCompile(`^/proc/(?:net|self/net|thread-self/net|([0-9]+)(?:/task/[0-9]+)?/net)/` +
	`(tcp6?|udp6?|udplite6?|raw6?|unix|icmp6?)$`)

// socketTable answers an open of p, if it is a socket table of the
// sandbox, with this machine's. It returns false, having answered
// nothing, for any other path.
func (h *hostNet) socketTable(n *seccompNotif, p string, flags int) bool {
	if h.off || flags&unix.O_ACCMODE != unix.O_RDONLY || !strings.HasPrefix(p, "/proc/") {
		return false
	}
	tid := int(n.Pid)
	m := socketTablePath.FindStringSubmatch(path.Clean(p))
	if m == nil {
		return false
	}
	if m[1] != "" {
		// Another process's tables: only a process of the sandbox sees
		// the sandbox's network.
		mine, err1 := os.Readlink("/proc/" + strconv.Itoa(tid) + "/ns/net")
		theirs, err2 := os.Readlink("/proc/" + m[1] + "/ns/net")
		if err1 != nil || err2 != nil || mine != theirs {
			return false
		}
	}
	fd, err := unix.Open("/proc/self/net/"+m[2], unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	if notifValid(h.listener, n.ID) {
		h.s.addFD(n.ID, fd, flags&unix.O_CLOEXEC != 0)
	}
	unix.Close(fd)
	return true
}

// Handlers, called from the supervisor's receiving loop (which answers
// the calls itself while h is off): none of them waits for anything but
// local system calls.

func (h *hostNet) readAddr(n *seccompNotif, addr, size uint64) (sockaddr, bool) {
	if addr == 0 || size < 2 || size > unix.SizeofSockaddrAny {
		return sockaddr{}, false
	}
	raw := make([]byte, size)
	if _, err := readMem(int(n.Pid), addr, raw); err != nil {
		return sockaddr{}, false
	}
	return parseSockaddr(raw)
}

func (h *hostNet) bind(n *seccompNotif, a [6]uint64) {
	sa, ok := h.readAddr(n, a[1], a[2])
	if !ok || bindPlace(sa) != placeHost {
		h.s.cont(n.ID)
		return
	}
	p, ok := h.take(int(n.Pid), int(int32(a[0])))
	if !ok {
		h.s.cont(n.ID)
		return
	}
	defer p.close()
	if p.host || p.bound || p.family != sa.family {
		h.s.cont(n.ID) // already here, or a call the kernel refuses anyway
		return
	}
	host, err := h.hostSocket(p, true)
	if err != nil {
		h.s.reply(n.ID, 0, errnoOf(err))
		return
	}
	defer unix.Close(host)
	// The bind runs here, so its error is this machine's: EADDRINUSE when
	// the port is taken here, EACCES for a privileged port.
	if err := bindRaw(host, sa.raw); err != nil {
		h.s.reply(n.ID, 0, errnoOf(err))
		return
	}
	// No NOTIF_ID_VALID first: ADDFD fails with ENOENT by itself when the
	// call is no longer waiting, and then nothing was installed.
	if err := h.install(n.ID, p, host); err != nil {
		h.s.reply(n.ID, 0, errnoOf(err))
		return
	}
	h.s.reply(n.ID, 0, 0)
}

// connect and sendto: a destination on this machine moves the socket
// here; so does a connect that the session keeps on this machine
// (WithConnectCheck). The kernel then runs the call itself, with all its
// semantics (blocking or not, EINPROGRESS, timeouts).
func (h *hostNet) send(n *seccompNotif, fd int, addr, size uint64, connect bool) {
	sa, ok := h.readAddr(n, addr, size)
	if !ok {
		h.s.cont(n.ID)
		return
	}
	var p *progSocket // taken once, by the check or for the move
	defer func() {
		if p != nil {
			p.close()
		}
	}()
	if sendPlace(sa) != placeHost {
		local := false
		if connect {
			var errno syscall.Errno
			local, errno = h.checkConnect(n, fd, sa, &p)
			if errno != 0 {
				h.s.reply(n.ID, 0, errno)
				return
			}
		}
		if !local {
			h.s.cont(n.ID)
			return
		}
	}
	if p == nil {
		if p, ok = h.take(int(n.Pid), fd); !ok {
			h.s.cont(n.ID)
			return
		}
	}
	// A socket bound to one of the sandbox's addresses stays (the kernel
	// answers as it would); so does one of another family.
	if p.host || p.family != sa.family && !(p.family == unix.AF_INET6 && sa.family == unix.AF_INET) || p.onSandboxAddr() {
		h.s.cont(n.ID)
		return
	}
	host, err := h.move(n.ID, p, false)
	if err != nil {
		h.s.reply(n.ID, 0, errnoOf(err))
		return
	}
	unix.Close(host)
	h.s.cont(n.ID)
}

// listen: a server. A socket of this machine listens here; a sandbox
// socket that is not bound to a sandbox address moves here first.
func (h *hostNet) listen(n *seccompNotif, a [6]uint64) {
	p, ok := h.take(int(n.Pid), int(int32(a[0])))
	if !ok {
		h.s.cont(n.ID)
		return
	}
	defer p.close()
	fd := p.fd
	if !p.host {
		if !p.local.inet() || p.onSandboxAddr() {
			h.s.cont(n.ID) // unix sockets, and servers on the sandbox's address
			return
		}
		host, err := h.move(n.ID, p, true)
		if err != nil {
			h.s.reply(n.ID, 0, errnoOf(err))
			return
		}
		defer unix.Close(host)
		fd = host
	}
	// The same open socket as the program's: listen here is its listen.
	if err := unix.Listen(fd, int(int32(a[1]))); err != nil {
		h.s.reply(n.ID, 0, errnoOf(err))
		return
	}
	h.report(fd)
	h.s.reply(n.ID, 0, 0)
}

// ConnectCheck says where a connect of a socket to dst goes: local when
// it is to be made from this machine (the socket moves here, as one to
// loopback does, and the kernel connects it: no engine in its data
// path), else errno is what it fails with before any packet leaves, or 0
// to let it go through the sandbox's network. udp tells a UDP socket from
// a TCP one (ok: either of the two). It runs on the supervisor's loop: it
// must answer quickly.
type ConnectCheck func(dst netip.AddrPort, udp func() (isUDP, ok bool)) (local bool, errno syscall.Errno)

// WithConnectCheck asks fn about every connect to an address outside this
// machine and the sandbox. Through the sandbox's network a refusal can
// only be a reset (ECONNREFUSED), so an error that has no packet of its
// own (the session's ENOBUFS, intproxy.Proxy.ConnectRoute) is given here;
// and a connection the session makes from this machine anyway is faster
// made by the kernel than relayed through the TUN device.
func WithConnectCheck(fn ConnectCheck) Option {
	return func(o *options) { o.connectCheck = fn }
}

// checkConnect asks h.connect about the program's connect of fd to sa. A
// copy of the socket it takes to answer is left in *taken.
func (h *hostNet) checkConnect(n *seccompNotif, fd int, sa sockaddr, taken **progSocket) (local bool, errno syscall.Errno) {
	if h.connect == nil || !sa.inet() || inSandbox(sa.ap.Addr().Unmap()) {
		return false, 0
	}
	// udp's second result is false for a socket that is neither TCP
	// nor UDP, or cannot be read: such a connect goes through.
	udp := func() (bool, bool) {
		if *taken == nil {
			p, ok := h.take(int(n.Pid), fd)
			if !ok {
				return false, false
			}
			*taken = p
		}
		p := *taken
		return p.typ == unix.SOCK_DGRAM, p.typ == unix.SOCK_STREAM || p.typ == unix.SOCK_DGRAM
	}
	return h.connect(sa.ap, udp)
}
