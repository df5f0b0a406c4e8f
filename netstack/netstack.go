package netstack

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/mirrord-go/mirrord/relay"
)

// Handler receives the sandbox's traffic. Each method is called in its own
// goroutine.
type Handler interface {
	// DialTCP connects to dst for the program. The program's connection
	// is accepted only if this succeeds; otherwise it is reset, so the
	// program sees "connection refused" as it would from the target.
	DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	// DialUDP returns a datagram connection to dst.
	DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error)
	// DNS answers one query in wire format.
	DNS(ctx context.Context, query []byte) ([]byte, error)
}

// Options configure a Stack.
type Options struct {
	MTU        uint32
	DNS4, DNS6 netip.Addr // addresses of the DNS server the sandbox's resolv.conf names
	Logger     *slog.Logger
}

// Stack is a running userspace network stack.
type Stack struct {
	s       *stack.Stack
	h       Handler
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	servers []*dns.Server
	wg      sync.WaitGroup
}

const nicID = 1

// udpIdleTimeout ends a UDP flow that has been quiet this long.
const udpIdleTimeout = 2 * time.Minute

// New starts a stack on the TUN device fd (which it does not close).
func New(fd int, h Handler, opts Options) (*Stack, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	tune(s)
	ep, err := fdbased.New(&fdbased.Options{
		FDs:                []int{fd},
		MTU:                opts.MTU,
		EthernetHeader:     false,
		PacketDispatchMode: fdbased.RecvMMsg,
		// Packets from the kernel arrive with checksums complete, so
		// checking them again is wasted work. Packets to the kernel must
		// carry correct checksums: a TUN device without a virtio-net
		// header has no way to say "checksum not computed", and the
		// kernel drops TCP segments with bad ones.
		RXChecksumOffload: true,
		TXChecksumOffload: false,
	})
	if err != nil {
		return nil, fmt.Errorf("netstack: TUN endpoint: %v", err)
	}
	if terr := s.CreateNIC(nicID, ep); terr != nil {
		return nil, fmt.Errorf("netstack: create NIC: %v", terr)
	}
	// Accept packets for any address and answer from any address: the
	// stack stands in for the whole network.
	s.SetPromiscuousMode(nicID, true)
	s.SetSpoofing(nicID, true)
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	ctx, cancel := context.WithCancel(context.Background())
	ns := &Stack{s: s, h: h, log: opts.Logger, ctx: ctx, cancel: cancel}

	tcpFwd := tcp.NewForwarder(s, 0, 4096, ns.forwardTCP)
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)
	udpFwd := udp.NewForwarder(s, ns.forwardUDP)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, udpFwd.HandlePacket)

	for _, a := range []netip.Addr{opts.DNS4, opts.DNS6} {
		if a.IsValid() {
			if err := ns.serveDNS(a); err != nil {
				ns.Close()
				return nil, err
			}
		}
	}
	return ns, nil
}

// tune applies the TCP settings that matter for bulk throughput.
func tune(s *stack.Stack) {
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: 1 << 20, Max: 8 << 20}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &rcv)
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: 1 << 20, Max: 8 << 20}
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &snd)
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &mod)
}

// Close stops the stack and every connection it carries.
func (ns *Stack) Close() {
	ns.cancel()
	for _, srv := range ns.servers {
		srv.Shutdown()
	}
	ns.s.Close()
	ns.wg.Wait()
}

func toAddrPort(a tcpip.Address, port uint16) netip.AddrPort {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return netip.AddrPortFrom(ip.Unmap(), port)
}

func fullAddr(a netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(a.Addr().AsSlice()), Port: a.Port()}
}

func protoOf(a netip.Addr) tcpip.NetworkProtocolNumber {
	if a.Is4() {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func (ns *Stack) forwardTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	dst := toAddrPort(id.LocalAddress, id.LocalPort)
	ctx, cancel := context.WithTimeout(ns.ctx, 30*time.Second)
	out, err := ns.h.DialTCP(ctx, dst)
	cancel()
	if err != nil {
		ns.log.Debug("tcp dial failed", "dst", dst.String(), "err", err)
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		r.Complete(true)
		out.Close()
		return
	}
	r.Complete(false)
	in := &programConn{gonet.NewTCPConn(&wq, ep), ep}
	ns.wg.Add(1)
	go func() {
		defer ns.wg.Done()
		stop := context.AfterFunc(ns.ctx, func() {
			in.Close()
			out.Close()
			// A stream to the agent, closed, still reads until the
			// agent's end closes too, which may never come (a
			// destination that never reads keeps the agent's relay
			// busy): the program is gone, so nothing waits for it.
			if d, ok := out.(interface{ SetReadDeadline(time.Time) error }); ok {
				d.SetReadDeadline(time.Now())
			}
		})
		defer stop()
		relay.Splice(in, out)
		in.Close()
		out.Close()
	}()
}

// programConn is the program's end of a TCP connection: Abort resets it
// (relay.Abort, when the way to the agent is lost), so that the program
// sees ECONNRESET, not an orderly end.
type programConn struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
}

func (c *programConn) Abort() {
	c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: true, Timeout: 0})
	c.Close()
}

func (ns *Stack) forwardUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	dst := toAddrPort(id.LocalAddress, id.LocalPort)
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		ns.log.Debug("udp endpoint", "dst", dst.String(), "err", terr)
		return true
	}
	in := gonet.NewUDPConn(&wq, ep)
	ns.wg.Add(1)
	go func() {
		defer ns.wg.Done()
		defer in.Close()
		ctx, cancel := context.WithTimeout(ns.ctx, 30*time.Second)
		out, err := ns.h.DialUDP(ctx, dst)
		cancel()
		if err != nil {
			ns.log.Debug("udp dial failed", "dst", dst.String(), "err", err)
			return
		}
		defer out.Close()
		stop := context.AfterFunc(ns.ctx, func() { in.Close(); out.Close() })
		defer stop()
		relayDatagrams(in, out)
	}()
	return true
}

// relayDatagrams copies datagrams both ways until either side fails or the
// flow is idle for udpIdleTimeout.
func relayDatagrams(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		buf := make([]byte, 65535)
		for {
			src.SetReadDeadline(time.Now().Add(udpIdleTimeout))
			n, err := src.Read(buf)
			if err != nil {
				break
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				break
			}
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	a.Close()
	b.Close()
	<-done
}

// serveDNS runs a DNS server (UDP and TCP) on addr:53 inside the stack.
func (ns *Stack) serveDNS(addr netip.Addr) error {
	pa := tcpip.ProtocolAddress{Protocol: protoOf(addr), AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix()}
	if terr := ns.s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); terr != nil {
		return fmt.Errorf("netstack: add DNS address %s: %v", addr, terr)
	}
	local := fullAddr(netip.AddrPortFrom(addr, 53))
	pc, err := gonet.DialUDP(ns.s, &local, nil, protoOf(addr))
	if err != nil {
		return fmt.Errorf("netstack: DNS on %s/udp: %w", addr, err)
	}
	ln, err := gonet.ListenTCP(ns.s, local, protoOf(addr))
	if err != nil {
		pc.Close()
		return fmt.Errorf("netstack: DNS on %s/tcp: %w", addr, err)
	}
	handler := dns.HandlerFunc(ns.answerDNS)
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		ns.servers = append(ns.servers, srv)
		ns.wg.Add(1)
		go func() {
			defer ns.wg.Done()
			srv.ActivateAndServe()
		}()
	}
	return nil
}

func (ns *Stack) answerDNS(w dns.ResponseWriter, r *dns.Msg) {
	query, err := r.Pack()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ns.ctx, 10*time.Second)
	defer cancel()
	answer, err := ns.h.DNS(ctx, query)
	if err != nil {
		ns.log.Debug("dns failed", "err", err)
		fail := new(dns.Msg)
		fail.SetRcode(r, dns.RcodeServerFailure)
		w.WriteMsg(fail)
		return
	}
	if _, isUDP := w.RemoteAddr().(*net.UDPAddr); isUDP && len(answer) > udpSize(r) {
		// Too big for the client's UDP buffer: truncate so that it
		// retries over TCP.
		m := new(dns.Msg)
		if m.Unpack(answer) == nil {
			m.Truncate(udpSize(r))
			w.WriteMsg(m)
			return
		}
	}
	w.Write(answer)
}

func udpSize(r *dns.Msg) int {
	if opt := r.IsEdns0(); opt != nil {
		return int(opt.UDPSize())
	}
	return dns.MinMsgSize
}
