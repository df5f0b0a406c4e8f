package agent

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/hashicorp/yamux"
	"github.com/miekg/dns"

	"github.com/mirrord-go/mirrord/protocol"
	"github.com/mirrord-go/mirrord/relay"
	"github.com/mirrord-go/mirrord/version"
)

// Options configure an agent.
type Options struct {
	TargetPID int // 0: targetless, unless ContainerID is set
	// ContainerID names the target by its container runtime ID (in a
	// cluster); the agent finds its PID under /proc.
	ContainerID string
	// Token, when set, must be presented by clients in their Hello: it
	// keeps other processes that can reach the agent's port out.
	Token  string
	Listen string // address to listen on, e.g. "127.0.0.1:0"
	// TTL is how long the agent waits after its last client left; 0
	// serves until ctx ends (an agent started by hand).
	TTL time.Duration
	// FirstClientTimeout is how long it waits for the first client; 0
	// waits until ctx ends.
	FirstClientTimeout time.Duration
	Logger             *slog.Logger
	// MaxConnections limits the streams each session may have open at
	// once (sessionlimits.go); 0 is DefaultMaxConnections.
	MaxConnections int
	// MaxSessionBytes limits the bytes the agent holds for each session
	// (sessionlimits.go); 0 is DefaultMaxSessionBytes.
	MaxSessionBytes int64
	// Ready is called with the listening address once the agent accepts
	// connections.
	Ready func(addr net.Addr)
	// Unattended, when set, is called (in a goroutine of its own) each
	// time the agent has had no client for UnattendedAfter after a
	// client left: a session that does not come back by then is taken
	// as gone, for what must not wait for the agent's TTL (restoring a
	// workload scaled down for the session).
	Unattended      func()
	UnattendedAfter time.Duration
}

// Agent serves clients.
type Agent struct {
	opts     Options
	log      *slog.Logger
	target   *target
	resolver *dns.ClientConfig
	hello    protocol.HelloReply

	in *incoming

	maxStreams int   // per session (sessionlimits.go)
	maxBytes   int64 // per session (sessionlimits.go)
	// budgets are the sessions' byte budgets, for the streams the agent
	// opens to them.
	budgets sync.Map // *yamux.Session → *relay.Budget

	mu      sync.Mutex
	clients int
	idle    *time.Timer
	// unattended runs Options.Unattended; nil without it.
	unattended *time.Timer
	// pending are the clients whose connection dropped and that may come
	// back, by session, until when the agent waits for them.
	pending map[string]time.Time
	// live counts the connections of each session (a client may be back
	// before its dropped connection is noticed).
	live map[string]int
	// current is the connection that serves each session now: a client
	// has one at a time, so a newer one means the older is dead (see
	// takeOver).
	current map[string]*yamux.Session
	done    chan struct{}
	once    sync.Once
}

// Run runs an agent until its TTL expires or ctx ends.
func Run(ctx context.Context, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ContainerID != "" && opts.TargetPID == 0 {
		pid, err := FindContainerPID("/proc", opts.ContainerID)
		if err != nil {
			return err
		}
		opts.TargetPID = pid
	}
	t, err := openTarget(opts.TargetPID)
	if err != nil {
		return err
	}
	defer t.Close()
	a := &Agent{opts: opts, log: opts.Logger, target: t, done: make(chan struct{}), pending: map[string]time.Time{}, live: map[string]int{}, current: map[string]*yamux.Session{}, maxStreams: opts.MaxConnections}
	if a.maxStreams <= 0 {
		a.maxStreams = DefaultMaxConnections
	}
	if a.maxBytes = opts.MaxSessionBytes; a.maxBytes <= 0 {
		a.maxBytes = DefaultMaxSessionBytes
	}
	if a.resolver, err = t.resolver(); err != nil {
		// DNS requests will fail with this error; the rest still works.
		a.log.Warn("no resolver", "err", err)
	}
	host, err := t.hostname()
	if err != nil {
		a.log.Warn("no hostname", "err", err)
	}
	a.hello = protocol.HelloReply{
		Version:    protocol.Version,
		Agent:      "mirrord-agent " + version.Version,
		Targetless: opts.TargetPID == 0,
		Hostname:   host,
		Resolver:   resolverInfo(a.resolver),

		MaxConnections:  a.maxStreams,
		MaxSessionBytes: a.maxBytes,
	}

	a.in = &incoming{a: a, subs: map[uint16][]*subscription{}, rules: map[uint16]*nftables.Rule{}, conns: map[*net.TCPConn]struct{}{}}
	a.cleanStaleTables()
	// Rules must not outlive the agent: removed on every way out of Run
	// (TTL, SIGTERM/SIGINT through ctx).
	defer a.in.close()

	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("agent: listen on %s: %w", opts.Listen, err)
	}
	defer ln.Close()
	// A zero timeout means none: the timer must then never be armed, as
	// AfterFunc(0) would fire before a Stop could catch it.
	firstWait := opts.FirstClientTimeout
	if firstWait <= 0 {
		firstWait = math.MaxInt64
	}
	a.idle = time.AfterFunc(firstWait, a.stop)
	if opts.Unattended != nil {
		a.unattended = time.AfterFunc(math.MaxInt64, func() {
			a.mu.Lock()
			alone := a.clients == 0
			a.mu.Unlock()
			if alone {
				opts.Unattended()
			}
		})
		defer a.unattended.Stop()
	}
	if opts.Ready != nil {
		opts.Ready(ln.Addr())
	}
	a.log.Info("agent listening", "addr", ln.Addr().String(), "target_pid", opts.TargetPID)
	go func() {
		select {
		case <-ctx.Done():
		case <-a.done:
		}
		ln.Close()
	}()
	// An agent whose target has ended can do nothing right: its clients
	// learn it from the connection closing, and a session then looks
	// for the target's new pod.
	go func() {
		select {
		case <-t.exited():
			a.log.Warn("the target process has ended; the agent stops", "target_pid", opts.TargetPID)
			a.stop()
		case <-a.done:
		}
	}()
	var wg sync.WaitGroup
	for {
		conn, err := ln.Accept()
		if err != nil {
			select {
			case <-a.done:
				wg.Wait()
				return nil
			default:
			}
			if ctx.Err() != nil {
				wg.Wait()
				return nil
			}
			return fmt.Errorf("agent: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.serveClient(ctx, conn)
		}()
	}
}

func (a *Agent) stop() { a.once.Do(func() { close(a.done) }) }

func (a *Agent) clientJoined() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clients++
	a.idle.Stop()
	if a.unattended != nil {
		a.unattended.Stop()
	}
}

// clientLeft arms the idle timer when the last client is gone: agent.ttl
// after a client that said goodbye, but at least the client's reconnect
// time after one whose connection dropped, which is trying to come back
// (its laptop slept, the API server restarted). A shared agent waits for
// the longest such wait still running.
func (a *Agent) clientLeft(c *client) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clients--
	key := c.key()
	if c.hasSession() {
		// The client may be back already, on a connection that came
		// before this one was noticed gone.
		if a.live[key]--; a.live[key] > 0 {
			key = ""
		} else {
			delete(a.live, key)
		}
	}
	if wait := c.reconnectWait(); wait > 0 && key != "" {
		a.pending[key] = time.Now().Add(wait)
	}
	if a.clients == 0 && a.unattended != nil {
		a.unattended.Reset(a.opts.UnattendedAfter)
	}
	if a.clients == 0 && a.opts.TTL > 0 {
		wait := a.opts.TTL
		for key, until := range a.pending {
			left := time.Until(until)
			if left <= 0 {
				delete(a.pending, key)
			}
			wait = max(wait, left)
		}
		a.idle.Reset(wait)
	}
}

// clientHello notes a client's session: one that dropped and is back is
// no longer waited for.
func (a *Agent) clientHello(c *client) {
	key := c.key()
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.pending, key)
	a.live[key]++
}

// client is what the agent knows of one client's session.
type client struct {
	mu        sync.Mutex
	session   string        // from its Hello; the same after a reconnection
	reconnect time.Duration // from its Hello
	bye       bool          // it said goodbye
}

// key names the client's session among those the agent waits for.
func (c *client) key() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session == "" {
		return fmt.Sprintf("%p", c)
	}
	return c.session
}

func (c *client) hasSession() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session != ""
}

// reconnectWait is how long to wait for the client to come back.
func (c *client) reconnectWait() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bye {
		return 0
	}
	return c.reconnect
}

// helloWait bounds the wait for a client's Hello.
const helloWait = 10 * time.Second

// authenticate reads the client's first request, which must be a Hello
// with this agent's protocol version and session token, before any other
// is read; it answers a refusal itself. Accepted, the client is known by
// its session, and the caller answers on the returned stream (and closes
// it) once it counts the client in.
func (a *Agent) authenticate(sess *yamux.Session, c *client) (*relay.Stream, error) {
	timer := time.AfterFunc(helloWait, func() { sess.Close() })
	defer timer.Stop()
	yst, err := sess.AcceptStream()
	if err != nil {
		return nil, fmt.Errorf("no hello: %w", err)
	}
	st := a.stream(sess, yst)
	st.SetDeadline(time.Now().Add(helloWait))
	refuse := func(msg string) (*relay.Stream, error) {
		protocol.Write(st, &protocol.ErrorReply{Message: msg})
		st.Close()
		return nil, errors.New(msg)
	}
	req, err := protocol.Read(st)
	if err != nil {
		return refuse(fmt.Sprintf("the first request must be a hello: %v", err))
	}
	hello, ok := req.(*protocol.Hello)
	if !ok {
		return refuse(fmt.Sprintf("the first request must be a hello, not %T", req))
	}
	if err := protocol.CheckVersion(hello.Version, "the client ("+hello.Client+")"); err != nil {
		return refuse(err.Error())
	}
	if a.opts.Token != "" && subtle.ConstantTimeCompare([]byte(hello.Token), []byte(a.opts.Token)) != 1 {
		return refuse("this agent belongs to another mirrord session (wrong session token)")
	}
	c.mu.Lock()
	c.reconnect = time.Duration(hello.ReconnectSeconds) * time.Second
	c.session = hello.Session
	c.mu.Unlock()
	if hello.Session != "" {
		a.clientHello(c)
		a.takeOver(hello.Session, sess)
	}
	return st, nil
}

// takeOver makes sess the connection of the client's session. An older
// one is dead from the client's side (it reconnected because it lost it),
// although the agent may not have noticed yet: a port-forward whose API
// server connection was cut can leave the agent's end open. It is closed
// now (the connections stolen through it end: their peers see them
// closed, not hanging), and its subscriptions are handed to the new one,
// which makes them again.
func (a *Agent) takeOver(key string, sess *yamux.Session) {
	a.mu.Lock()
	old := a.current[key]
	a.current[key] = sess
	a.mu.Unlock()
	if old == nil || old == sess {
		return
	}
	a.log.Info("client back on a new connection; its old one is closed")
	if a.in != nil {
		a.in.handOver(old, sess)
	}
	old.Close()
}

// connectionGone forgets sess as its session's connection, unless a newer
// one has taken its place.
func (a *Agent) connectionGone(key string, sess *yamux.Session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current[key] == sess {
		delete(a.current, key)
	}
}

// serveClient runs one client's session: every stream is one request.
func (a *Agent) serveClient(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	// The connection usually goes through the container runtime's
	// port-forward and the API server: whole frames per write keep
	// them from relaying each frame header as a message of its own.
	mux := protocol.MuxConfig()
	mux.MaxStreamWindowSize = agentWindow
	budget := a.newBudget(conn.RemoteAddr().String())
	sess, err := yamux.Server(budget.Conn(conn), mux)
	if err != nil {
		a.log.Warn("session", "err", err)
		return
	}
	defer sess.Close()
	budget.Attach(sess)
	a.budgets.Store(sess, budget)
	defer a.budgets.Delete(sess)
	go func() {
		select {
		case <-ctx.Done():
		case <-a.done:
		case <-sess.CloseChan():
		}
		sess.Close()
	}()
	c := &client{}
	hello, err := a.authenticate(sess, c)
	if err != nil {
		a.log.Warn("client refused", "remote", conn.RemoteAddr().String(), "err", err)
		// Let the refusal reach the client before the connection goes.
		select {
		case <-sess.CloseChan():
		case <-time.After(time.Second):
		}
		return
	}
	// Counted in before the answer: once the client has the answer it
	// may drop at once, and yamux may then report the answer as not sent
	// (the session's shutdown races its send); the client is then one
	// that dropped, to be waited for, not one that never came.
	a.clientJoined()
	defer a.clientLeft(c)
	if c.hasSession() {
		defer a.connectionGone(c.key(), sess)
	}
	if a.in != nil {
		defer a.in.dropHandedOver(sess)
	}
	err = protocol.Write(hello, &a.hello)
	hello.Close()
	if err != nil {
		a.log.Info("client gone before the hello's answer was sent", "remote", conn.RemoteAddr().String(), "err", err)
		return
	}
	a.log.Info("client connected", "remote", conn.RemoteAddr().String())
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			a.log.Info("client gone", "remote", conn.RemoteAddr().String(), "err", err)
			return
		}
		go a.serveStream(sess, a.stream(sess, st), c)
	}
}

func (a *Agent) serveStream(sess *yamux.Session, st *relay.Stream, c *client) {
	defer st.Close()
	req, err := protocol.Read(st)
	if err != nil {
		if !errors.Is(err, io.EOF) {
			a.log.Warn("bad request", "err", err)
			protocol.Write(st, &protocol.ErrorReply{Message: err.Error()})
		}
		return
	}
	switch req := req.(type) {
	case *protocol.Bye:
		c.mu.Lock()
		c.bye = true
		c.mu.Unlock()
		protocol.Write(st, &protocol.ByeReply{})
	case *protocol.EnvRequest:
		env, err := a.target.env()
		if err != nil {
			protocol.Write(st, &protocol.ErrorReply{Message: err.Error()})
			return
		}
		protocol.Write(st, &protocol.EnvReply{Env: env})
	case *protocol.DNSRequest:
		answer, err := a.exchange(req.Query)
		if err != nil {
			protocol.Write(st, &protocol.ErrorReply{Message: err.Error()})
			return
		}
		protocol.Write(st, &protocol.DNSReply{Answer: answer})
	case *protocol.DialRequest:
		if err := a.checkStreams(sess); err != nil {
			a.log.Warn("dial refused", "addr", req.Addr, "err", err)
			protocol.Write(st, &protocol.ErrorReply{Message: err.Error(), Code: errorCode(err)})
			return
		}
		a.dial(st, req)
	case *protocol.UDPOpen:
		if err := a.checkStreams(sess); err != nil {
			a.log.Warn("udp refused", "err", err)
			protocol.Write(st, &protocol.ErrorReply{Message: err.Error(), Code: errorCode(err)})
			return
		}
		a.udp(st, req)
	case *protocol.FileRequest:
		a.serveFile(st, req)
	case *protocol.Subscribe:
		sub, err := a.in.subscribe(sess, req)
		if err != nil {
			protocol.Write(st, &protocol.ErrorReply{Message: err.Error(), Code: errorCode(err)})
			return
		}
		defer a.in.unsubscribe(sub)
		if protocol.Write(st, &protocol.SubscribeReply{TLS: sub.tls != nil}) != nil {
			return
		}
		// The subscription lasts until the client closes the stream or
		// the session ends.
		io.Copy(io.Discard, st)
	default:
		protocol.Write(st, &protocol.ErrorReply{Message: fmt.Sprintf("unexpected request %T", req)})
	}
}

// dial connects from the target (TCP from its network namespace, a unix
// socket in its file system) and then copies bytes between the stream and
// the connection until both sides are done.
func (a *Agent) dial(st *relay.Stream, req *protocol.DialRequest) {
	var conn net.Conn
	var err error
	reply := &protocol.DialReply{}
	switch req.Network {
	case "", protocol.NetworkTCP:
		conn, err = a.target.dial(context.Background(), "tcp", req.Addr, 20*time.Second)
		if err == nil {
			reply.LocalAddr, reply.RemoteAddr = conn.LocalAddr().String(), conn.RemoteAddr().String()
		}
	case protocol.NetworkUnix:
		// The agent's end is unnamed; the peer is the path asked for (the
		// connection went through a /proc link, see dialUnix).
		conn, err = a.target.dialUnix(req.Addr)
		reply.RemoteAddr = req.Addr
	default:
		protocol.Write(st, &protocol.ErrorReply{Message: fmt.Sprintf("dial: unknown network %q", req.Network), Code: "EAFNOSUPPORT"})
		return
	}
	if err != nil {
		protocol.Write(st, &protocol.ErrorReply{Message: err.Error(), Code: errorCode(err)})
		return
	}
	defer conn.Close()
	if err := protocol.Write(st, reply); err != nil {
		return
	}
	relay.Splice(st, conn)
}

// udp relays datagrams between the stream and a UDP socket in the target.
func (a *Agent) udp(st *relay.Stream, req *protocol.UDPOpen) {
	network := req.Network
	if network != "udp4" && network != "udp6" {
		network = "udp"
	}
	var pc *net.UDPConn
	err := a.target.inNetns(func() error {
		var err error
		pc, err = net.ListenUDP(network, nil)
		return err
	})
	if err != nil {
		protocol.Write(st, &protocol.ErrorReply{Message: err.Error(), Code: errorCode(err)})
		return
	}
	defer pc.Close()
	if err := protocol.Write(st, &protocol.UDPOpenReply{LocalAddr: pc.LocalAddr().String()}); err != nil {
		return
	}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				st.Close()
				return
			}
			if protocol.Write(st, &protocol.Datagram{Addr: from.String(), Data: buf[:n]}) != nil {
				pc.Close()
				return
			}
		}
	}()
	for {
		m, err := protocol.ReadReply[*protocol.Datagram](st)
		if err != nil {
			return
		}
		addr, err := net.ResolveUDPAddr("udp", m.Addr)
		if err != nil {
			continue
		}
		pc.WriteToUDP(m.Data, addr)
	}
}
