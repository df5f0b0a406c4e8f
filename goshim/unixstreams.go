package goshim

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync"

	"golang.org/x/sys/unix"
)

// Unix sockets of the target, for the program in the sandbox
// (feature.network.outgoing.unix_streams).
//
// A path names the same file in the sandbox as on this machine, so a
// connect to a socket path normally runs untouched. With WithUnixStreams,
// the supervisor asks about each connect of a stream socket to a path;
// for one that means the target, it gets the path of a listener of
// mirrord's on this machine that relays to the target's socket, and
// connects the program's own socket to it (the copy pidfd_getfd gives is
// the same open socket, and a path lookup does not care which network
// namespace the socket belongs to). The program keeps its socket, with its
// options, flags and event loop registrations, now a connected AF_UNIX
// stream socket; the kernel carries the data.
//
// getpeername on such a socket names the path the program connected to,
// not mirrord's listener, as it does under the preload: the supervisor
// then also sees getpeername calls, and answers those for the sockets it
// connected (known by their SO_COOKIE, which the kernel never reuses).

// UnixRelay is asked, for the program's connect of a stream socket to the
// unix socket path, where that connect goes: the path of a listening
// socket on this machine to connect to instead, or "" to leave the call to
// the kernel. An error is the program's connect's (the syscall.Errno it
// wraps; EIO otherwise).
type UnixRelay func(ctx context.Context, path string) (string, error)

// WithUnixStreams sends the program's stream connections to the unix
// socket paths relay chooses elsewhere (see UnixRelay).
func WithUnixStreams(relay UnixRelay) Option {
	return func(o *options) { o.unixRelay = relay }
}

// unixPath returns the path of a unix socket address, false for any other
// address (abstract names, which are per network namespace and stay this
// machine's, and unnamed ones included).
func unixPath(sa sockaddr) (string, bool) {
	if sa.family != unix.AF_UNIX || sa.abs || len(sa.raw) <= 2 {
		return "", false
	}
	p := sa.raw[2:]
	if i := bytes.IndexByte(p, 0); i >= 0 {
		p = p[:i]
	}
	return string(p), len(p) > 0
}

// unixPeerName is the address getpeername gives for a socket connected to
// path: as the kernel gives a listener's address, the family, the path
// and its NUL.
func unixPeerName(path string) []byte {
	b := binary.NativeEndian.AppendUint16(nil, unix.AF_UNIX)
	return append(append(b, path...), 0)
}

// unixConnect handles a connect to a unix socket path. It returns false,
// having answered nothing, when the address is not a path.
func (s *supervisor) unixConnect(n *seccompNotif, a [6]uint64) bool {
	sa, ok := s.net.readAddr(n, a[1], a[2])
	if !ok {
		return false
	}
	path, ok := unixPath(sa)
	if !ok {
		return false
	}
	id, tid, num := n.ID, int(n.Pid), int(int32(a[0]))
	// The relay asks mirrord's proxy (and, for the target's paths, the
	// agent): off the receiving loop.
	s.async(func(ctx context.Context) {
		p, ok := s.net.take(tid, num)
		if !ok {
			s.cont(id)
			return
		}
		defer p.close()
		if p.typ != unix.SOCK_STREAM || p.family != unix.AF_UNIX {
			s.cont(id) // datagram and seqpacket sockets stay local; a wrong family gets the kernel's error
			return
		}
		to, err := s.unixRelay(ctx, path)
		switch {
		case err != nil:
			s.reply(id, 0, errnoOf(err))
			return
		case to == "":
			s.cont(id)
			return
		case !notifValid(s.listener, id):
			return // interrupted: the program's socket stays as it was
		}
		if err := unix.Connect(p.fd, &unix.SockaddrUnix{Name: to}); err != nil {
			s.reply(id, 0, errnoOf(err))
			return
		}
		if cookie, err := unix.GetsockoptUint64(p.fd, unix.SOL_SOCKET, unix.SO_COOKIE); err == nil {
			s.peers.add(cookie, unixPeerName(path))
		}
		s.reply(id, 0, 0)
	})
	return true
}

// unixPeername answers for a socket the supervisor connected to a relay:
// the address the program connected to. For any other socket it answers
// nothing and returns false (the incoming-peer handler or the kernel
// then does).
func (s *supervisor) unixPeername(n *seccompNotif, a [6]uint64) bool {
	if s.peers.empty() {
		return false
	}
	tid := int(n.Pid)
	pidfd, err := pidfdOf(tid)
	if err != nil {
		return false
	}
	fd, err := unix.PidfdGetfd(pidfd, int(int32(a[0])), 0)
	unix.Close(pidfd)
	if err != nil {
		return false // not a descriptor: the kernel says EBADF
	}
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return false
	}
	name, ok := s.peers.get(cookie)
	if !ok {
		return false
	}
	// Still connected? (ENOTCONN after a shutdown by the program.)
	if _, err := unix.Getpeername(fd); err != nil {
		s.reply(n.ID, 0, errnoOf(err))
		return true
	}
	// getpeername's contract: *addrlen says how much room there is; the
	// address is cut to it, and *addrlen set to its whole length.
	var room int32
	if a[1] == 0 || a[2] == 0 {
		s.reply(n.ID, 0, unix.EFAULT)
		return true
	}
	if _, err := readMem(tid, a[2], bytesOf(&room)); err != nil {
		s.reply(n.ID, 0, unix.EFAULT)
		return true
	}
	if room < 0 {
		s.reply(n.ID, 0, unix.EINVAL)
		return true
	}
	full := int32(len(name))
	if !notifValid(s.listener, n.ID) {
		return true
	}
	if writeMem(tid, a[1], name[:min(room, full)]) != nil || writeMem(tid, a[2], bytesOf(&full)) != nil {
		s.reply(n.ID, 0, unix.EFAULT)
		return true
	}
	s.reply(n.ID, 0, 0)
	return true
}

// peerNames maps the cookies of the sockets connected to a relay to the
// address the program connected to. The supervisor does not see a socket
// close, so the oldest entries make room for new ones past maxPeerNames:
// a socket that old then names mirrord's listener, which is the only
// harm.
type peerNames struct {
	mu    sync.Mutex
	names map[uint64][]byte
	order []uint64
}

const maxPeerNames = 4096

func (p *peerNames) add(cookie uint64, name []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.names == nil {
		p.names = map[uint64][]byte{}
	}
	if len(p.order) >= maxPeerNames {
		delete(p.names, p.order[0])
		p.order = p.order[1:]
	}
	p.names[cookie] = name
	p.order = append(p.order, cookie)
}

func (p *peerNames) get(cookie uint64) ([]byte, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	name, ok := p.names[cookie]
	return name, ok
}

func (p *peerNames) empty() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.names) == 0
}
