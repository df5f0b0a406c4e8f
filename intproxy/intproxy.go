package intproxy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/mirrord-go/mirrord/addrfilter"
	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/envfilter"
	"github.com/mirrord-go/mirrord/protocol"
	"github.com/mirrord-go/mirrord/relay"
	"github.com/mirrord-go/mirrord/version"
)

// Proxy is a connected internal proxy. When its connection to the agent
// drops, it reconnects (WithReconnect): streams that were open fail, new
// ones wait for the new connection, and incoming subscriptions are made
// again.
type Proxy struct {
	cfg   *config.Config
	log   *slog.Logger
	hello protocol.HelloReply

	outgoing addrfilter.Set
	dns      addrfilter.Set
	unix     unixMatcher // feature.network.outgoing.unix_streams
	relays   relayDir    // listeners standing for the target's unix sockets

	names    *nameCache
	localDNS *localResolver
	// probePorts are the target's ports with HTTP probes.
	probePorts []uint16
	// peers are the target's clients of the connections delivered to the
	// program (peers.go).
	peers peerTable

	// Reconnection (reconnect.go).
	id        string // this session's, for the agent to know it again
	agent     AgentAddr
	reconnect time.Duration
	redial    Redialer
	events    func(Event)

	mu      sync.Mutex
	sess    *yamux.Session
	changed chan struct{} // closed when sess is replaced
	done    chan struct{} // closed when the proxy ends
	closing bool
	err     error // why the proxy ended, when not closed
	subs    map[*subscription]bool

	lastLimit time.Time // the last LimitReached event (checkLimit)
	lastReset time.Time // the last one for a reset over the byte budget
}

// AgentAddr says where an agent listens and what it asks of its clients.
type AgentAddr struct {
	Addr  string
	Token string // the session secret the agent was started with
}

// Option configures Connect.
type Option func(*Proxy)

// WithToken presents the session secret the agent was started with.
func WithToken(token string) Option { return func(p *Proxy) { p.agent.Token = token } }

// WithHTTPProbePorts names the target's ports that kubelet probes with
// HTTP GETs: subscriptions to them say so, and the agent lets the probes
// through to the target's app when the rest of the port is stolen.
func WithHTTPProbePorts(ports []uint16) Option {
	return func(p *Proxy) { p.probePorts = ports }
}

// Connect connects to an agent at addr and checks the protocol version.
func Connect(ctx context.Context, addr string, cfg *config.Config, log *slog.Logger, opts ...Option) (*Proxy, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{cfg: cfg, log: log, names: newNameCache(), localDNS: newLocalResolver(),
		id: rand.Text(), agent: AgentAddr{Addr: addr}, changed: make(chan struct{}), done: make(chan struct{}), subs: map[*subscription]bool{}}
	for _, o := range opts {
		o(p)
	}
	sess, hello, err := p.dialAgent(ctx, p.agent)
	if err != nil {
		return nil, err
	}
	p.sess, p.hello = sess, hello
	if p.outgoing, err = parseSet(cfg.Feature.Network.Outgoing.Filter, true); err != nil {
		sess.Close()
		return nil, err
	}
	if p.dns, err = parseSet(cfg.Feature.Network.DNS.Filter, false); err != nil {
		sess.Close()
		return nil, err
	}
	if p.unix, err = newUnixMatcher(cfg.Feature.Network.Outgoing.UnixStreams); err != nil {
		sess.Close()
		return nil, err
	}
	go p.supervise()
	return p, nil
}

// dialAgent opens a session with the agent at a and shakes hands.
func (p *Proxy) dialAgent(ctx context.Context, a AgentAddr) (*yamux.Session, protocol.HelloReply, error) {
	// "unix:PATH" is an agent reached through a unix socket: `mirrord
	// container` relays one into the container, whose network may be
	// anything (none, a user network) but shares the bind-mounted socket.
	network, address := "tcp", a.Addr
	if path, ok := strings.CutPrefix(a.Addr, "unix:"); ok {
		network, address = "unix", path
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, protocol.HelloReply{}, fmt.Errorf("cannot reach the agent at %s: %w", a.Addr, err)
	}
	sess, err := yamux.Client(relay.WatchResets(conn, func(uint32) { p.overBudget() }), protocol.MuxConfig())
	if err != nil {
		conn.Close()
		return nil, protocol.HelloReply{}, fmt.Errorf("agent session: %w", err)
	}
	hello, err := p.handshake(ctx, sess, a.Token)
	if err != nil {
		sess.Close()
		return nil, protocol.HelloReply{}, err
	}
	return sess, hello, nil
}

func parseSet(fc *config.FilterConfig, outgoing bool) (addrfilter.Set, error) {
	var s addrfilter.Set
	if fc == nil {
		return s, nil
	}
	parse := func(list []string) ([]addrfilter.Filter, error) {
		out := make([]addrfilter.Filter, 0, len(list))
		for _, e := range list {
			f, err := addrfilter.Parse(e, outgoing)
			if err != nil {
				return nil, err
			}
			out = append(out, f)
		}
		return out, nil
	}
	var err error
	if s.Local, err = parse(fc.Local); err != nil {
		return s, err
	}
	s.Remote, err = parse(fc.Remote)
	return s, err
}

func (p *Proxy) handshake(ctx context.Context, sess *yamux.Session, token string) (protocol.HelloReply, error) {
	st, err := sess.OpenStream()
	if err != nil {
		return protocol.HelloReply{}, fmt.Errorf("agent handshake: %w", err)
	}
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	hello := &protocol.Hello{Version: protocol.Version, Client: "mirrord " + version.Version, Token: token,
		ReconnectSeconds: uint32(p.reconnect / time.Second), Session: p.id}
	if err := protocol.Write(st, hello); err != nil {
		return protocol.HelloReply{}, fmt.Errorf("agent handshake: %w", err)
	}
	reply, err := protocol.ReadReply[*protocol.HelloReply](st)
	if err != nil {
		return protocol.HelloReply{}, fmt.Errorf("agent handshake: %w", err)
	}
	if err := protocol.CheckVersion(reply.Version, "the agent ("+reply.Agent+")"); err != nil {
		return protocol.HelloReply{}, err
	}
	return *reply, nil
}

// openWait bounds how long a new stream waits for a reconnection.
const openWait = 5 * time.Second

// open opens a stream, bounded by ctx. While the proxy reconnects it waits
// for the new connection (up to openWait).
func (p *Proxy) open(ctx context.Context) (*yamux.Stream, error) {
	st, _, err := p.openOn(ctx)
	return st, err
}

// openOn is open that also says which session the stream is on.
func (p *Proxy) openOn(ctx context.Context) (*yamux.Stream, *yamux.Session, error) {
	for {
		sess, changed := p.current()
		st, err := sess.OpenStream()
		if err == nil {
			if dl, ok := ctx.Deadline(); ok {
				st.SetDeadline(dl)
			}
			return st, sess, nil
		}
		t := time.NewTimer(openWait)
		select {
		case <-changed:
			t.Stop()
			continue
		case <-p.done:
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		return nil, nil, fmt.Errorf("the agent connection is closed: %w", err)
	}
}

// current returns the agent session, and a channel closed when it is
// replaced.
func (p *Proxy) current() (*yamux.Session, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sess, p.changed
}

// Hello is what the agent said about itself and its target.
func (p *Proxy) Hello() protocol.HelloReply {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hello
}

// Done is closed when the proxy ends: it was closed, or it lost the agent
// and could not get back to one (Err says why).
func (p *Proxy) Done() <-chan struct{} { return p.done }

// Err says why the proxy ended on its own; nil while it runs or after
// Close.
func (p *Proxy) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// byeWait bounds the goodbye to the agent at Close.
const byeWait = 500 * time.Millisecond

// Close ends the session. It tells the agent first, so that the agent
// need not wait for this client to come back.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return nil
	}
	p.closing = true
	sess := p.sess
	p.mu.Unlock()
	p.relays.close()
	if p.reconnect > 0 && !sess.IsClosed() {
		if st, err := sess.OpenStream(); err == nil {
			st.SetDeadline(time.Now().Add(byeWait))
			if protocol.Write(st, &protocol.Bye{}) == nil {
				protocol.ReadReply[*protocol.ByeReply](st)
			}
			st.Close()
		}
	}
	err := sess.Close()
	p.end(nil)
	return err
}

// end marks the proxy ended, with err as the reason (nil: closed).
func (p *Proxy) end(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return
	default:
	}
	p.err = err
	close(p.done)
}

// RemoteEnv fetches the target's whole environment.
func (p *Proxy) RemoteEnv(ctx context.Context) (map[string]string, error) {
	st, err := p.open(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := protocol.Write(st, &protocol.EnvRequest{}); err != nil {
		return nil, err
	}
	reply, err := protocol.ReadReply[*protocol.EnvReply](st)
	if err != nil {
		return nil, fmt.Errorf("fetch the target's environment: %w", err)
	}
	return reply.Env, nil
}

// Environment computes the program's environment from the local one and
// the target's, following feature.env.
func (p *Proxy) Environment(ctx context.Context, local []string) ([]string, error) {
	ec := p.cfg.Feature.Env
	spec := envfilter.Spec{
		Filter:   envfilter.Filter{Include: ec.Include, Exclude: ec.Exclude},
		Mapping:  ec.Mapping,
		Override: ec.Override,
		Unset:    ec.Unset,
	}
	remote := map[string]string{}
	if !(len(ec.Exclude) == 1 && ec.Exclude[0] == "*") {
		var err error
		if remote, err = p.RemoteEnv(ctx); err != nil {
			return nil, err
		}
	}
	if ec.EnvFile != nil {
		vars, err := envfilter.ReadEnvFile(*ec.EnvFile)
		if err != nil {
			return nil, err
		}
		spec.EnvFile = vars
	}
	merged, err := spec.Remote(remote)
	if err != nil {
		return nil, err
	}
	return envfilter.Merge(local, merged, ec.Unset), nil
}

// ErrDisabled is returned for traffic the config sends nowhere.
var ErrDisabled = errors.New("disabled by the configuration")

// DialTCP connects to dst for the program: through the agent, or directly
// from this machine, as feature.network.outgoing says.
func (p *Proxy) DialTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	if p.remote(ctx, addrfilter.TCP, dst) {
		return p.dialRemoteTCP(ctx, dst)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", dst.String())
}

// dialRemoteTCP connects to dst from the target.
func (p *Proxy) dialRemoteTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return p.dialRemote(ctx, &protocol.DialRequest{Network: protocol.NetworkTCP, Addr: dst.String()})
}

// dialRemote opens a stream connection in the target: the stream then
// carries its bytes.
func (p *Proxy) dialRemote(ctx context.Context, req *protocol.DialRequest) (net.Conn, error) {
	st, sess, err := p.openOn(ctx)
	if err != nil {
		return nil, err
	}
	if err := protocol.Write(st, req); err != nil {
		st.Close()
		return nil, err
	}
	if _, err := protocol.ReadReply[*protocol.DialReply](st); err != nil {
		st.Close()
		p.checkLimit(err)
		return nil, err
	}
	st.SetDeadline(time.Time{})
	return &remoteConn{Stream: st, sess: sess}, nil
}

// remoteConn is a connection the agent made for the program. When the
// session under it ends, its stream reads io.EOF as if the far side had
// ended it; Read says relay.ErrAborted instead, so that the program's side
// is reset (as a connection whose path broke is), not closed cleanly.
type remoteConn struct {
	*yamux.Stream
	sess *yamux.Session
}

func (c *remoteConn) Read(b []byte) (int, error) {
	n, err := c.Stream.Read(b)
	if err == io.EOF && c.sess.IsClosed() {
		err = relay.ErrAborted
	}
	return n, err
}

// DialUDP returns a datagram connection to dst: each Write sends one
// datagram, each Read returns one.
func (p *Proxy) DialUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	if !p.remote(ctx, addrfilter.UDP, dst) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dst.String())
	}
	return p.dialRemoteUDP(ctx, dst)
}

func (p *Proxy) dialRemoteUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	st, err := p.open(ctx)
	if err != nil {
		return nil, err
	}
	network := "udp4"
	if dst.Addr().Is6() && !dst.Addr().Is4In6() {
		network = "udp6"
	}
	if err := protocol.Write(st, &protocol.UDPOpen{Network: network}); err != nil {
		st.Close()
		return nil, err
	}
	if _, err := protocol.ReadReply[*protocol.UDPOpenReply](st); err != nil {
		st.Close()
		p.checkLimit(err)
		return nil, err
	}
	st.SetDeadline(time.Time{})
	return &udpConn{Stream: st, dst: dst}, nil
}

// udpConn carries one UDP flow over a stream in Datagram frames.
type udpConn struct {
	*yamux.Stream
	dst netip.AddrPort
	wmu sync.Mutex
}

func (c *udpConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := protocol.Write(c.Stream, &protocol.Datagram{Addr: c.dst.String(), Data: b}); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c *udpConn) Read(b []byte) (int, error) {
	for {
		m, err := protocol.ReadReply[*protocol.Datagram](c.Stream)
		if err != nil {
			return 0, err
		}
		// The program's socket is connected to dst: drop anything else,
		// as the kernel would.
		if from, err := netip.ParseAddrPort(m.Addr); err == nil && from.Addr().Unmap() != c.dst.Addr().Unmap() {
			continue
		}
		return copy(b, m.Data), nil
	}
}

// remote decides whether an outgoing connection goes through the agent.
func (p *Proxy) remote(ctx context.Context, proto addrfilter.Protocol, dst netip.AddrPort) bool {
	r, _ := p.route(ctx, proto, dst, true)
	return r
}

// route decides whether an outgoing connection goes through the agent.
// Without resolve it looks no name up: a name filter is then matched by
// the names the program resolved already, and known is false when a
// lookup could change the answer.
func (p *Proxy) route(ctx context.Context, proto addrfilter.Protocol, dst netip.AddrPort, resolve bool) (remote, known bool) {
	out := p.cfg.Feature.Network.Outgoing
	if (proto == addrfilter.TCP && !out.TCP) || (proto == addrfilter.UDP && !out.UDP) {
		return false, true
	}
	t := addrfilter.Target{Protocol: proto, Addr: dst.Addr().Unmap(), Port: dst.Port()}
	switch {
	case len(p.outgoing.Remote) > 0:
		return p.anyMatch(ctx, p.outgoing.Remote, t, true, resolve)
	case len(p.outgoing.Local) > 0:
		m, known := p.anyMatch(ctx, p.outgoing.Local, t, false, resolve)
		return !m, known
	}
	return true, true
}

// anyMatch matches t against filters. A name filter matches when the
// program reached t.Addr through that name (we saw the DNS answer), or when
// the name resolves to t.Addr: remotely for a remote list when remote DNS
// is on, locally otherwise, as upstream mirrord does. Without resolve no
// name is looked up, and known is false when one might have matched.
func (p *Proxy) anyMatch(ctx context.Context, fs []addrfilter.Filter, t addrfilter.Target, remoteList, resolve bool) (match, known bool) {
	known = true
	for _, f := range fs {
		tt := t
		if f.Name != "" {
			switch {
			case p.names.has(f.Name, t.Addr):
				tt.Name = f.Name
			case !resolve:
				named := tt
				named.Name = f.Name
				if f.Match(named) {
					known = false // the name might resolve to t.Addr
				}
				continue
			case p.resolvesTo(ctx, f.Name, t.Addr, remoteList && p.cfg.Feature.Network.DNS.Enabled):
				tt.Name = f.Name
			}
		}
		if f.Match(tt) {
			return true, true
		}
	}
	return false, known
}

// DialRemoteTCP connects to dst from the target, whatever the outgoing
// filter says (port-forward always means "from the cluster").
func (p *Proxy) DialRemoteTCP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return p.dialRemoteTCP(ctx, dst)
}

// DialRemoteUDP opens a UDP flow to dst from the target.
func (p *Proxy) DialRemoteUDP(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
	return p.dialRemoteUDP(ctx, dst)
}

// ConnectRoute says where a program's connect to dst goes, before any
// packet: local when the outgoing filter keeps it on this machine (the
// sandbox then makes the program's socket one of this machine's, and the
// kernel connects it: no engine in the data path); otherwise errno is
// ENOBUFS when it would go through the agent and the session already has
// all the connections the agent allows, 0 when it goes through the
// sandbox's network. udp says whether the socket is UDP (ok: TCP or UDP
// at all). The sandbox asks it (goshim.WithConnectCheck) on its
// supervisor's loop, so the answer never waits for a name lookup: a
// connect that a name filter might keep local goes through the sandbox's
// network, whose dial decides with the lookup. (Through that network a
// refused dial can only show as a reset; the preload gets the agent's own
// answer.)
func (p *Proxy) ConnectRoute(dst netip.AddrPort, udp func() (isUDP, ok bool)) (local bool, errno syscall.Errno) {
	// Asking udp costs the sandbox a copy of the socket: only when the
	// answer depends on it.
	ctx := context.Background()
	remote, known := p.route(ctx, addrfilter.TCP, dst, false)
	if ru, ku := p.route(ctx, addrfilter.UDP, dst, false); ru != remote || ku != known {
		isUDP, ok := udp()
		if !ok {
			return false, 0
		}
		if isUDP {
			remote, known = ru, ku
		}
	}
	if !remote && known {
		return true, 0
	}
	limit := p.Hello().MaxConnections
	sess, _ := p.current()
	if limit <= 0 || sess.NumStreams() < limit {
		return false, 0
	}
	isUDP, ok := udp()
	if !ok {
		return false, 0
	}
	proto := addrfilter.TCP
	if isUDP {
		proto = addrfilter.UDP
	}
	if !known {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if !p.remote(ctx, proto, dst) {
			return false, 0
		}
	}
	p.checkLimit(&protocol.ErrorReply{Code: "ENOBUFS", Message: protocol.SessionFull(limit)})
	return false, syscall.ENOBUFS
}

// limitEventEvery spaces the LimitReached events of a program that keeps
// connecting past the session's limit.
const limitEventEvery = 10 * time.Second

// overBudget tells, at most once every limitEventEvery, that the agent
// reset a connection of the session over its byte budget.
func (p *Proxy) overBudget() {
	p.mu.Lock()
	now := time.Now()
	quiet := now.Sub(p.lastReset) < limitEventEvery
	if !quiet {
		p.lastReset = now
	}
	limit := p.hello.MaxSessionBytes
	p.mu.Unlock()
	if !quiet {
		p.event(LimitReached, "%s", protocol.OverBudget(limit))
	}
}

// checkLimit tells the user, through an event, when err is the agent's
// refusal of a connection past the session's limit: the program only
// sees ENOBUFS, which does not say whose limit it is.
func (p *Proxy) checkLimit(err error) {
	var er *protocol.ErrorReply
	if !errors.As(err, &er) || er.Code != "ENOBUFS" {
		return
	}
	p.mu.Lock()
	now := time.Now()
	quiet := now.Sub(p.lastLimit) < limitEventEvery
	if !quiet {
		p.lastLimit = now
	}
	p.mu.Unlock()
	if !quiet {
		p.event(LimitReached, "the agent refused a connection of the program (ENOBUFS): %s", er.Message)
	}
}
