package goshim

import (
	"encoding/binary"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The client of a delivered connection.
//
// mirrord delivers the target's incoming connections by connecting to the
// program's server on this machine's loopback, so the kernel shows the
// program mirrord's end of the connection (127.0.0.1:<port>) as the peer.
// The program should see the target's client, as the preload shows it
// (see intproxy/peers.go for why the kernel cannot be made to show it).
// With WithIncomingPeers the supervisor also receives accept, accept4 and
// getpeername, and:
//
//   - accept and accept4 on a listening socket of this machine bound to a
//     wildcard address (the only servers mirrord delivers to), with an
//     address buffer, are run by the supervisor: it accepts on its copy of
//     the socket (pidfd_getfd: the same open socket), asks for the client
//     when the peer is a loopback address, writes the address as the
//     kernel would (truncated to the buffer, the full length in *addrlen)
//     and installs the connection as the call's result
//     (SECCOMP_ADDFD_FLAG_SEND). Without an address buffer the kernel
//     accepts (libuv does that, and asks getpeername afterwards).
//   - getpeername on a socket of this machine whose local port is such a
//     server's and whose peer is a loopback address is answered with the
//     client; everything else continues in the kernel.
//
// A blocking accept waits in the supervisor, not in the kernel, and with
// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV a thread whose notification was
// received is not interrupted by signals. So the waiting supervisor
// watches the thread: every pollInterval it checks that the call is still
// pending and whether a signal the thread does not block is pending for it
// (/proc/<tid>/status). Then it answers ERESTARTSYS, which the kernel
// turns into what an interrupted accept does: the handler runs, and the
// call restarts (SA_RESTART) or fails with EINTR; a stop signal stops the
// program, and the call restarts when it continues. ERESTARTSYS must only
// reach a thread that has the signal, or the program would see errno 512:
// a signal for the thread itself, or one for the process when the thread
// leads it (the kernel offers a process's signal to its leader first).
// A process's signal pending across two checks while another thread waits
// here ends that thread's wait with EINTR: the kernel may have chosen it.
// A stop signal another thread took (Ctrl-Z) stops the whole process: a
// waiting thread whose process leader is stopped answers ERESTARTSYS too,
// so that it stops with the others and restarts on SIGCONT.
//
// Accepts of one listening socket by the supervisor are serialised, so
// that a blocking one that found a connection ready does not block in
// accept when another thread took it first.

// pollInterval is how often a waiting accept checks its thread: the delay
// a signal may see, and the cost of an idle blocking server (a
// /proc/<tid>/status read per interval).
const pollInterval = 50 * time.Millisecond

// erestartsys is the kernel's ERESTARTSYS (include/linux/errno.h), which
// user space never sees: the signal code turns it into EINTR or a restart.
const erestartsys = 512

// PeerFunc returns the target's client of the connection from from (a
// loopback address: mirrord's end of a delivery) to the program's port,
// or false when the connection is not one of mirrord's deliveries.
type PeerFunc func(from netip.AddrPort, port uint16) (netip.AddrPort, bool)

// WithIncomingPeers makes accept, accept4 and getpeername show the
// target's client of the connections mirrord delivers to the program,
// which fn knows (intproxy.Proxy.OriginalPeer). fn is asked only about
// connections from loopback to the program's wildcard servers, mostly on
// the supervisor's receiving loop: it must answer quickly (a round trip
// to the session at most).
func WithIncomingPeers(fn PeerFunc) Option {
	return func(o *options) { o.peers = fn }
}

// peerState is the supervisor's part for WithIncomingPeers.
type peerState struct {
	fn PeerFunc

	mu      sync.Mutex
	servers map[uint16]bool        // ports of the program's wildcard listeners of this machine
	accepts map[uint64]*sync.Mutex // per listening socket (inode): the supervisor's accepts
}

func (ps *peerState) addServer(port uint16) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.servers == nil {
		ps.servers = map[uint16]bool{}
	}
	ps.servers[port] = true
}

func (ps *peerState) isServer(port uint16) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.servers[port]
}

func (ps *peerState) acceptLock(ino uint64) *sync.Mutex {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.accepts == nil {
		ps.accepts = map[uint64]*sync.Mutex{}
	}
	m := ps.accepts[ino]
	if m == nil {
		m = new(sync.Mutex)
		ps.accepts[ino] = m
	}
	return m
}

// copyOf takes a copy of the program's descriptor num if it is a TCP (or
// MPTCP) socket of this machine; -1 otherwise.
func (h *hostNet) copyOf(tid, num int) int {
	pidfd, err := pidfdOf(tid)
	if err != nil {
		return -1
	}
	fd, err := unix.PidfdGetfd(pidfd, num, 0)
	unix.Close(pidfd)
	if err != nil {
		return -1
	}
	cookie, err1 := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	typ, err2 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	proto, err3 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	// Go's listeners are MPTCP (Go 1.24); a plain TCP client's connection
	// falls back to TCP.
	tcp := proto == unix.IPPROTO_TCP || proto == unix.IPPROTO_MPTCP
	if err1 != nil || err2 != nil || err3 != nil || cookie != h.cookie || typ != unix.SOCK_STREAM || !tcp {
		unix.Close(fd)
		return -1
	}
	return fd
}

// clientAddr is the raw address of client as a socket of family shows
// it: an IPv4 client of an IPv6 socket v4-mapped. nil when the family
// cannot hold it (an IPv6 client of an IPv4 socket, which the kernel
// would never show: mirrord's address stays).
func clientAddr(family int, client netip.AddrPort) []byte {
	ip := client.Addr().Unmap()
	switch {
	case family == unix.AF_INET6:
		b := make([]byte, unix.SizeofSockaddrInet6)
		binary.NativeEndian.PutUint16(b, unix.AF_INET6)
		binary.BigEndian.PutUint16(b[2:], client.Port())
		a := netip.AddrFrom16(ip.As16()).As16() // As16 maps an IPv4 address
		copy(b[8:24], a[:])
		return b
	case family == unix.AF_INET && ip.Is4():
		b := make([]byte, unix.SizeofSockaddrInet4)
		binary.NativeEndian.PutUint16(b, unix.AF_INET)
		binary.BigEndian.PutUint16(b[2:], client.Port())
		a := ip.As4()
		copy(b[4:8], a[:])
		return b
	}
	return nil
}

// original returns the address to show for a connection whose raw peer
// address is peer, on the program's port: the client's when the peer is
// a delivery of mirrord's, else peer itself.
func (h *hostNet) original(peer []byte, port uint16) []byte {
	sa, ok := parseSockaddr(peer)
	if !ok || !sa.inet() || !sa.ap.Addr().Unmap().IsLoopback() {
		return peer
	}
	client, ok := h.peers.fn(netip.AddrPortFrom(sa.ap.Addr().Unmap(), sa.ap.Port()), port)
	if !ok {
		return peer
	}
	if b := clientAddr(sa.family, client); b != nil {
		return b
	}
	return peer
}

// writeAddr writes raw to the program's (addr, addrlen) as accept and
// getpeername do: at most *addrlen bytes, and the full length in
// *addrlen. It returns the errno to answer.
func writeAddr(tid int, addr, lenAddr uint64, capLen int32, raw []byte) syscall.Errno {
	n := min(int(capLen), len(raw))
	if n > 0 && writeMem(tid, addr, raw[:n]) != nil {
		return unix.EFAULT
	}
	var l [4]byte
	binary.NativeEndian.PutUint32(l[:], uint32(len(raw)))
	if writeMem(tid, lenAddr, l[:]) != nil {
		return unix.EFAULT
	}
	return 0
}

// readLen reads the program's *addrlen; an errno when the kernel would
// refuse it.
func readLen(tid int, lenAddr uint64) (int32, syscall.Errno) {
	var l [4]byte
	if lenAddr == 0 {
		return 0, unix.EFAULT
	}
	if _, err := readMem(tid, lenAddr, l[:]); err != nil {
		return 0, unix.EFAULT
	}
	v := int32(binary.NativeEndian.Uint32(l[:]))
	if v < 0 {
		return 0, unix.EINVAL
	}
	return v, 0
}

// acceptCall is an accept the supervisor runs for the program.
type acceptCall struct {
	id            uint64
	tid           int
	addr, lenAddr uint64 // the program's address buffer and its length
	capLen        int32  // *addrlen when the call was made
	flags         int
	port          uint16    // the listening socket's
	deadline      time.Time // a blocking socket's SO_RCVTIMEO, which ends the wait with EAGAIN
}

// accept handles accept (flags 0) and accept4 of fd, with the address
// buffer addr and its length at lenAddr.
func (h *hostNet) accept(n *seccompNotif, fd int, addr, lenAddr uint64, flags int) {
	tid := int(n.Pid)
	if addr == 0 || flags&^(unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC) != 0 {
		h.s.cont(n.ID) // no address asked (getpeername answers later), or the kernel's EINVAL
		return
	}
	lfd := h.copyOf(tid, fd)
	if lfd < 0 {
		h.s.cont(n.ID)
		return
	}
	listening, err := unix.GetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	local, ok := sockName(lfd)
	if err != nil || listening != 1 || !ok || !local.inet() || !local.ap.Addr().IsUnspecified() {
		unix.Close(lfd)
		h.s.cont(n.ID)
		return
	}
	capLen, errno := readLen(tid, lenAddr)
	if errno != 0 {
		unix.Close(lfd)
		h.s.reply(n.ID, 0, errno)
		return
	}
	var st unix.Stat_t
	fl, err1 := unix.FcntlInt(uintptr(lfd), unix.F_GETFL, 0)
	if err1 != nil || unix.Fstat(lfd, &st) != nil {
		unix.Close(lfd)
		h.s.cont(n.ID)
		return
	}
	call := acceptCall{id: n.ID, tid: tid, addr: addr, lenAddr: lenAddr, capLen: capLen, flags: flags, port: local.ap.Port()}
	nonblock := fl&unix.O_NONBLOCK != 0
	if tv, err := unix.GetsockoptTimeval(lfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO); !nonblock && err == nil && tv.Nano() > 0 {
		call.deadline = time.Now().Add(time.Duration(tv.Nano()))
	}
	lock := h.peers.acceptLock(st.Ino)
	// A connection that is there already (or none, for a non-blocking
	// socket) is answered right here: a hop to another thread costs more
	// than the call. Waiting for one happens on a goroutine.
	if cfd, peer, errno, done := tryAccept(lfd, nonblock, lock, flags&unix.SOCK_NONBLOCK); done {
		unix.Close(lfd)
		h.finishAccept(call, cfd, peer, errno)
		return
	}
	h.s.wg.Add(1)
	go func() {
		defer h.s.wg.Done()
		defer unix.Close(lfd)
		if cfd, peer, errno, ok := h.waitAccept(call, lfd, lock); ok {
			h.finishAccept(call, cfd, peer, errno)
		}
	}()
}

// finishAccept answers the call with the connection cfd (ours, closed
// here) whose raw peer address is peer, or with errno.
func (h *hostNet) finishAccept(c acceptCall, cfd int, peer []byte, errno syscall.Errno) {
	if errno != 0 {
		h.s.reply(c.id, 0, errno)
		return
	}
	defer unix.Close(cfd)
	raw := h.original(peer, c.port)
	// The thread still waits in this very call: its memory is the
	// caller's (with WAIT_KILLABLE_RECV only its death ends the wait, and
	// then the connection goes with the process).
	if !notifValid(h.listener, c.id) {
		return
	}
	if errno := writeAddr(c.tid, c.addr, c.lenAddr, c.capLen, raw); errno != 0 {
		h.s.reply(c.id, 0, errno) // the kernel drops the connection too
		return
	}
	h.s.addFD(c.id, cfd, c.flags&unix.SOCK_CLOEXEC != 0)
}

// tryAccept accepts a connection on lfd if one is there. done is false
// when a blocking accept has to wait; otherwise it returns our descriptor
// of the connection and its raw peer address, or the call's errno (a
// non-blocking socket's EAGAIN).
func tryAccept(lfd int, nonblock bool, lock *sync.Mutex, sockNonblock int) (cfd int, peer []byte, errno syscall.Errno, done bool) {
	lock.Lock()
	defer lock.Unlock()
	for {
		if !nonblock {
			// Is one there? (The lock keeps the supervisor's other
			// accepts of this socket from taking it before ours.)
			pfd := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}}
			if k, _ := unix.Poll(pfd, 0); k <= 0 {
				return -1, nil, 0, false
			}
		}
		var raw [unix.SizeofSockaddrAny]byte
		rl := uint32(len(raw))
		r, _, e := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&raw[0])),
			uintptr(unsafe.Pointer(&rl)), uintptr(unix.SOCK_CLOEXEC|sockNonblock), 0, 0)
		switch {
		case e == 0:
			return int(r), raw[:min(int(rl), len(raw))], 0, true
		case e == unix.EINTR:
			continue // a signal to mirrord's thread, not the program's
		case !nonblock && (e == unix.EAGAIN || e == unix.ECONNABORTED):
			return -1, nil, 0, false // gone meanwhile: the blocking accept goes on waiting
		}
		return -1, nil, e, true
	}
}

// waitAccept waits for a connection on lfd (a blocking socket) for the
// call c while it still waits (ok false: answered or gone), watching the
// thread's signals.
func (h *hostNet) waitAccept(c acceptCall, lfd int, lock *sync.Mutex) (cfd int, peer []byte, errno syscall.Errno, ok bool) {
	var sharedSeen bool
	for {
		wait := pollInterval
		if !c.deadline.IsZero() {
			if left := time.Until(c.deadline); left <= 0 {
				return -1, nil, unix.EAGAIN, true
			} else if left < wait {
				wait = left + time.Millisecond - 1 // poll's unit, rounded up
			}
		}
		pfd := []unix.PollFd{{Fd: int32(lfd), Events: unix.POLLIN}}
		if k, _ := unix.Poll(pfd, int(wait/time.Millisecond)); k > 0 {
			if cfd, peer, errno, done := tryAccept(lfd, false, lock, c.flags&unix.SOCK_NONBLOCK); done {
				return cfd, peer, errno, true
			}
			continue
		}
		if h.s.ctx.Err() != nil || !notifValid(h.listener, c.id) {
			return -1, nil, 0, false
		}
		switch signalFor(c.tid, &sharedSeen) {
		case sigRestart:
			h.s.reply(c.id, 0, erestartsys)
			return -1, nil, 0, false
		case sigInterrupt:
			h.s.reply(c.id, 0, unix.EINTR)
			return -1, nil, 0, false
		}
	}
}

type sigAction int

const (
	sigNone      sigAction = iota
	sigRestart             // the thread has a signal: ERESTARTSYS
	sigInterrupt           // a process signal may be the thread's: EINTR
)

// signalFor tells whether a signal the thread tid does not block is
// pending for it (see the comment at the top for the rules).
func signalFor(tid int, sharedSeen *bool) sigAction {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return sigNone
	}
	var own, shared, blocked uint64
	tgid := 0
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Tgid":
			tgid, _ = strconv.Atoi(v)
		case "SigPnd":
			own, _ = strconv.ParseUint(v, 16, 64)
		case "ShdPnd":
			shared, _ = strconv.ParseUint(v, 16, 64)
		case "SigBlk":
			blocked, _ = strconv.ParseUint(v, 16, 64)
		}
	}
	switch {
	case own&^blocked != 0, shared&^blocked != 0 && tgid == tid:
		return sigRestart
	case tgid != tid && groupStopped(tgid):
		// A stop signal (Ctrl-Z, SIGSTOP) was taken by another thread,
		// which stopped: every thread of the process has to stop too, and
		// the kernel has marked this one (TIF_SIGPENDING) for it.
		return sigRestart
	case shared&^blocked != 0:
		if *sharedSeen {
			return sigInterrupt
		}
		*sharedSeen = true
	default:
		*sharedSeen = false
	}
	return sigNone
}

// groupStopped reports whether process pid is stopped by a stop signal
// ("T" in /proc/<pid>/stat; a ptrace stop is "t", per thread).
func groupStopped(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')') // the command name may hold anything
	return i >= 0 && i+2 < len(b) && b[i+2] == 'T'
}

// getpeername answers for a connection of one of the program's servers
// whose peer is a delivery of mirrord's.
func (h *hostNet) getpeername(n *seccompNotif, fd int, addr, lenAddr uint64) {
	tid := int(n.Pid)
	h.peers.mu.Lock()
	none := len(h.peers.servers) == 0
	h.peers.mu.Unlock()
	if addr == 0 || lenAddr == 0 || none {
		h.s.cont(n.ID)
		return
	}
	cfd := h.copyOf(tid, fd)
	if cfd < 0 {
		h.s.cont(n.ID)
		return
	}
	local, ok1 := sockName(cfd)
	peer, ok2 := peerName(cfd)
	unix.Close(cfd)
	if !ok1 || !ok2 || !local.inet() || !peer.inet() || !peer.ap.Addr().Unmap().IsLoopback() || !h.peers.isServer(local.ap.Port()) {
		h.s.cont(n.ID)
		return
	}
	raw := h.original(peer.raw, local.ap.Port())
	if string(raw) == string(peer.raw) {
		h.s.cont(n.ID)
		return
	}
	capLen, errno := readLen(tid, lenAddr)
	switch {
	case errno != 0:
		h.s.reply(n.ID, 0, errno)
	case !notifValid(h.listener, n.ID):
	default:
		h.s.reply(n.ID, 0, writeAddr(tid, addr, lenAddr, capLen, raw))
	}
}

// peerName returns the peer address of socket fd, raw and parsed.
func peerName(fd int) (sockaddr, bool) {
	var raw [unix.SizeofSockaddrAny]byte
	n := uint32(len(raw))
	if _, _, errno := unix.Syscall(unix.SYS_GETPEERNAME, uintptr(fd), uintptr(unsafe.Pointer(&raw[0])), uintptr(unsafe.Pointer(&n))); errno != 0 {
		return sockaddr{}, false
	}
	return parseSockaddr(append([]byte(nil), raw[:min(int(n), len(raw))]...))
}
