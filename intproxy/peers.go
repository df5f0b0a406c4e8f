package intproxy

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The client the program sees.
//
// mirrord hands the program a mirrored or stolen connection by connecting
// to its server on this machine's loopback, so the kernel shows the
// program mirrord's end of that connection (127.0.0.1:<ephemeral port>) as
// its peer. Upstream mirrord shows the target's client instead, and so do
// we: the program logs, rate-limits or checks the address it would see in
// the pod.
//
// Making the kernel itself show it would need mirrord's end to bind the
// client's address: IP_TRANSPARENT (or IPV6_TRANSPARENT) needs
// CAP_NET_ADMIN, which mirrord does not have (EPERM unprivileged; measured
// on Linux 6.18), IP_FREEBIND alone cannot connect from an address that is
// not local (ENETUNREACH), and even as root the program's answers to that
// address would leave by the default route instead of loopback without
// policy routing on this machine. So the kernel's answer is corrected
// where the program asks: the preload's accept/accept4/getpeername hooks
// and, for the netstack engine, the supervisor's handling of the same
// system calls (goshim/peers.go). Both ask this table, so both give the
// same answer.
//
// The table maps mirrord's end of each delivery (its loopback address and
// port) and the program's port to the original client. The end is bound
// before the connection is made and recorded at once: the program may
// accept the connection before connect returns here.

// peerLinger is how long a delivery's client is remembered after mirrord's
// end of it closed: the program may still ask (getpeername on a connection
// whose client is gone, a mirrored one whose copy already ended).
var peerLinger = time.Minute

type deliveryKey struct {
	from netip.AddrPort // mirrord's end of the delivery, unmapped
	port uint16         // the program's port
}

type peerEntry struct{ client netip.AddrPort }

type peerTable struct {
	mu sync.Mutex
	m  map[deliveryKey]*peerEntry
}

func (t *peerTable) add(k deliveryKey, client netip.AddrPort) *peerEntry {
	e := &peerEntry{client: client}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[deliveryKey]*peerEntry{}
	}
	t.m[k] = e // a port reused by a newer delivery: the newer one is right
	return e
}

// remove forgets k unless a newer delivery took it over.
func (t *peerTable) remove(k deliveryKey, e *peerEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[k] == e {
		delete(t.m, k)
	}
}

func (t *peerTable) get(k deliveryKey) (netip.AddrPort, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[k]
	if !ok {
		return netip.AddrPort{}, false
	}
	return e.client, true
}

// normalPeer is the client as the table keeps it: IPv4 unmapped (the
// agent's dual-stack listener may say ::ffff:a.b.c.d), no zone.
func normalPeer(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// DialProgram connects to the program's server at dst (a loopback
// address) on behalf of client, the target's peer whose connection this
// is, and remembers client for OriginalPeer until release is called (and
// peerLinger after). An invalid client is not remembered: the program then
// sees mirrord's address, as before.
func (p *Proxy) DialProgram(ctx context.Context, dst, client netip.AddrPort) (c net.Conn, release func(), err error) {
	network, from := "tcp4", netip.AddrFrom4([4]byte{127, 0, 0, 1})
	if dst.Addr().Is6() && !dst.Addr().Is4In6() {
		network, from = "tcp6", netip.IPv6Loopback()
	}
	var key deliveryKey
	var ent *peerEntry
	forget := func() {
		if ent != nil {
			p.peers.remove(key, ent)
			ent = nil
		}
	}
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		if !client.IsValid() {
			return nil
		}
		var berr error
		cerr := rc.Control(func(fd uintptr) {
			// Bind first, so that the port is known (and recorded) before
			// the program can accept the connection.
			// (As4 panics on the IPv6 loopback: pick by the family.)
			var sa unix.Sockaddr
			if network == "tcp6" {
				sa = &unix.SockaddrInet6{Addr: from.As16()}
			} else {
				sa = &unix.SockaddrInet4{Addr: from.As4()}
			}
			if berr = unix.Bind(int(fd), sa); berr != nil {
				return
			}
			lsa, gerr := unix.Getsockname(int(fd))
			if gerr != nil {
				berr = gerr
				return
			}
			forget() // a retried attempt
			key = deliveryKey{from: netip.AddrPortFrom(from, sockaddrPort(lsa).Port()), port: dst.Port()}
			ent = p.peers.add(key, normalPeer(client))
		})
		if cerr != nil {
			return cerr
		}
		return berr
	}}
	c, err = d.DialContext(ctx, network, dst.String())
	if err != nil {
		forget()
		return nil, nil, err
	}
	var once sync.Once
	return c, func() {
		once.Do(func() {
			if ent == nil {
				return
			}
			k, e := key, ent
			time.AfterFunc(peerLinger, func() { p.peers.remove(k, e) })
		})
	}, nil
}

// OriginalPeer returns the target's client of the connection that
// mirrord delivered from from (its end on loopback) to the program's port,
// or false when no delivery of mirrord's is that connection.
func (p *Proxy) OriginalPeer(from netip.AddrPort, port uint16) (netip.AddrPort, bool) {
	return p.peers.get(deliveryKey{from: normalPeer(from), port: port})
}

// ParseSource parses an Incoming's Source ("ip:port"); the zero value
// when it is not one.
func ParseSource(s string) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(s)
	return ap
}
