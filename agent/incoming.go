package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/httpfilter"
	"github.com/mirrord-go/mirrord/protocol"
	"github.com/mirrord-go/mirrord/relay"
)

// tablePrefix marks nftables tables as ours; the suffix is the agent's
// PID and its PID namespace (tableName), so a stale table (its agent is
// gone) can be recognised and removed.
const tablePrefix = "mirrord_agent_"

// tableName is this agent's table: a PID means something only in its PID
// namespace, and the agents in one network namespace may live in several
// (a Job agent sees the node's PIDs, an ephemeral agent in the target's
// pod those of the target container).
func tableName() string {
	return fmt.Sprintf("%s%d_%d", tablePrefix, os.Getpid(), ownPIDNamespace())
}

// ownPIDNamespace is the inode of the agent's PID namespace (0 if unknown).
func ownPIDNamespace() uint64 {
	var st unix.Stat_t
	if unix.Stat("/proc/self/ns/pid", &st) != nil {
		return 0
	}
	return st.Ino
}

// staleTable says whether the table name (ours) was left by an agent that
// is gone. A table of an agent in another PID namespace is not judged
// (its PID cannot be looked up here): an agent of that namespace cleans it.
func staleTable(name string, ownNS uint64) bool {
	suffix, _ := strings.CutPrefix(name, tablePrefix)
	pidStr, nsStr, hasNS := strings.Cut(suffix, "_")
	if hasNS && nsStr != strconv.FormatUint(ownNS, 10) {
		return false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid == os.Getpid() {
		return true
	}
	_, err = os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err != nil
}

// incoming redirects subscribed ports of the target to a listener of the
// agent in the target's network namespace, with an nftables REDIRECT rule
// in the prerouting hook: connections from outside the pod are taken,
// while the agent's own connections (output hook) are not, which is how it
// can still reach the original app to pass traffic through.
type incoming struct {
	a *Agent

	mu     sync.Mutex
	ln     net.Listener
	lnPort uint16
	nft    *nftables.Conn
	table  *nftables.Table
	chain  *nftables.Chain
	subs   map[uint16][]*subscription
	rules  map[uint16]*nftables.Rule
	// conns: the redirected connections being handled. The table stays
	// while there are any, even with no subscription left: the kernel
	// translates a redirected connection's packets only while the
	// namespace tracks connections, which the table's keep-conntrack
	// rule ensures. Without it the agent's close (FIN or reset) of a
	// stolen connection, and every packet of a mirrored one it still
	// relays, would go out with the listener's port and the peer would
	// never see them.
	conns map[*net.TCPConn]struct{}
	// waiting: the filtered connections that wait for a request or for
	// the rest of its head (httplimits.go)
	waiting waitList
}

type subscription struct {
	port   uint16
	mirror bool
	filter httpfilter.Filter // nil: the whole connection
	// whole: the session takes the port for itself, although filter is
	// set (an unfiltered steal of a port with HTTP probes: all requests
	// but the probes), so no other session may share it.
	whole bool
	sess  *yamux.Session
	// handedOver: the session's client came back on a new connection
	// (sess), which has not subscribed again yet; its new subscription
	// replaces this one (handOver).
	handedOver bool
	// tls: the port serves TLS, which the agent ends (a filtered steal
	// only: tlssteal.go); nil for a cleartext port.
	tls *tlsPort
}

// newSubscription is what sess asks for with req.
func newSubscription(sess *yamux.Session, req *protocol.Subscribe) (*subscription, error) {
	mirror := req.Mode == "mirror"
	sub := &subscription{port: req.Port, mirror: mirror, sess: sess}
	switch {
	case mirror && req.Filter == nil:
	case req.Filter != nil:
		f, err := httpfilter.Build(*req.Filter)
		if err != nil {
			return nil, fmt.Errorf("http filter for port %d: %w", req.Port, err)
		}
		sub.filter = f
	case req.HTTPProbes:
		sub.filter, sub.whole = httpfilter.ExceptKubeProbes(), true
	}
	return sub, nil
}

// shares says whether s and other can both have the port: only
// HTTP-filtered steals share one (a filtered mirror takes the port whole).
func (s *subscription) shares(other *subscription) bool {
	return s.filter != nil && !s.whole && !s.mirror && other.filter != nil && !other.whole && !other.mirror
}

// cleanStaleTables removes tables left by agents that are no longer
// running (for example one that was killed).
func (a *Agent) cleanStaleTables() {
	if a.target.pid == 0 {
		return
	}
	var opts []nftables.ConnOption
	if a.target.netns != nil {
		opts = append(opts, nftables.WithNetNSFd(int(a.target.netns.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return
	}
	tables, err := c.ListTables()
	if err != nil {
		return
	}
	ownNS := ownPIDNamespace()
	for _, t := range tables {
		if !strings.HasPrefix(t.Name, tablePrefix) || !staleTable(t.Name, ownNS) {
			continue
		}
		c.DelTable(t)
		a.log.Info("removed stale nftables table", "table", t.Name)
	}
	c.Flush()
}

// subscribe starts taking connections to req.Port for sess. Several
// sessions may steal one port with HTTP filters; a session that takes
// whole connections must be alone on its port.
func (in *incoming) subscribe(sess *yamux.Session, req *protocol.Subscribe) (*subscription, error) {
	sub, err := newSubscription(sess, req)
	if err != nil {
		return nil, err
	}
	if req.TLS != nil {
		if sub.filter == nil || sub.whole || sub.mirror {
			return nil, fmt.Errorf("TLS on port %d: the agent ends TLS only for a steal with an HTTP filter", req.Port)
		}
		// Read and checked before anything changes on the target: a
		// bad certificate leaves the port as it was.
		if sub.tls, err = in.a.loadTLSPort(req.Port, req.TLS); err != nil {
			return nil, err
		}
	}
	port, mirror, override := sub.port, sub.mirror, req.Override
	in.mu.Lock()
	defer in.mu.Unlock()
	if override && !mirror {
		// Take the port: the sessions that had it get no more of its
		// connections (their subscriptions end when they leave).
		if n := len(in.subs[port]); n > 0 {
			in.a.log.Info("incoming: port taken over", "port", port, "sessions", n)
			delete(in.subs, port)
		}
	}
	// The subscription the session had before it reconnected gives way
	// to this one (below, once this one is sure to be made), the
	// redirect staying in place.
	mine := func(old *subscription) bool { return old.handedOver && old.sess == sess }
	for _, old := range in.subs[port] {
		if mine(old) {
			continue
		}
		if !old.shares(sub) {
			// EADDRINUSE (the reply's code) tells the client it is
			// the port that is taken: on_concurrent_steal decides.
			return nil, fmt.Errorf("port %d is already taken by another mirrord session on this target (only HTTP-filtered steals can share a port): %w", port, unix.EADDRINUSE)
		}
		if old.tlsSpec() != sub.tlsSpec() {
			// One port, one way to read its connections.
			return nil, fmt.Errorf("port %d is already stolen by another mirrord session on this target with other TLS settings (tls_ports: certificate, key, client certificate); the sessions must agree", port)
		}
	}
	if err := in.ensureListener(); err != nil {
		return nil, err
	}
	if err := in.ensureTable(); err != nil {
		return nil, err
	}
	if in.rules[port] == nil {
		// Another agent's redirect for the port comes first in the
		// pod's namespace and takes every connection: ours would see
		// none. (Sessions with the same agent settings share an agent;
		// this is two agents with different ones.)
		if other := in.redirectedElsewhere(port); other != "" {
			return nil, fmt.Errorf("port %d of the target is already taken by another mirrord agent (nftables table %s; sessions share an agent only when their agent settings match): %w", port, other, unix.EADDRINUSE)
		}
		flush := req.Flush && !mirror
		in.nft.AddRule(&nftables.Rule{Table: in.table, Chain: in.chain, Exprs: redirectExprs(port, in.lnPort, !flush)})
		if err := in.nft.Flush(); err != nil {
			return nil, fmt.Errorf("nftables: add the redirect for port %d: %w", port, err)
		}
		// Flush does not fill in the handle; read it back to delete by it.
		rules, err := in.nft.GetRules(in.table, in.chain)
		if err != nil || len(rules) == 0 {
			return nil, fmt.Errorf("nftables: read back the rule for port %d: %v", port, err)
		}
		in.rules[port] = rules[len(rules)-1]
		// Only for a new redirect: connections to the port that exist
		// now are the app's own, none of them is a stolen one yet.
		if flush {
			n, err := in.a.target.flushConnections(port, in.lnPort)
			if err != nil {
				in.a.log.Warn("incoming: flush_connections", "port", port, "err", err)
			} else if n > 0 {
				in.a.log.Info("incoming: flushed established connections", "port", port, "connections", n)
			}
		}
	}
	in.subs[port] = append(slices.DeleteFunc(in.subs[port], mine), sub)
	in.a.log.Info("subscribed", "port", port, "mirror", mirror, "filtered", sub.filter != nil)
	return sub, nil
}

// redirectExprs is the rule that sends TCP connections to port to the
// agent's listener. NAT is decided by the first packet conntrack sees of
// a connection, and a pod's namespace often has no conntrack at all until
// our table brings it: then the next packet of every connection that is
// already open would be taken as the start of a new one and redirected to
// a listener that knows nothing of it, which resets it. synOnly redirects
// only connection openings (SYN without ACK), so connections from before
// stay with the app (mirror, and steal without flush_connections); without
// it (flush_connections), they are reset and their peers reconnect.
func redirectExprs(port, lnPort uint16, synOnly bool) []expr.Any {
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
	if synOnly {
		const syn, ack = 0x02, 0x10
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{syn | ack}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{syn}},
		)
	}
	return append(e,
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(lnPort)},
		&expr.Redir{RegisterProtoMin: 1},
	)
}

// redirectedElsewhere returns the name of another agent's table that
// redirects port in the target's namespace, or "".
func (in *incoming) redirectedElsewhere(port uint16) string {
	chains, err := in.nft.ListChains()
	if err != nil {
		return ""
	}
	for _, ch := range chains {
		if !strings.HasPrefix(ch.Table.Name, tablePrefix) || ch.Table.Name == in.table.Name {
			continue
		}
		rules, err := in.nft.GetRules(ch.Table, ch)
		if err != nil {
			continue
		}
		if slices.ContainsFunc(rules, func(r *nftables.Rule) bool { return redirectsPort(r, port) }) {
			return ch.Table.Name
		}
	}
	return ""
}

// redirectsPort says whether r, read back from the kernel, is a rule
// redirectExprs made for port: it compares the TCP destination port with it.
func redirectsPort(r *nftables.Rule, port uint16) bool {
	want := binaryutil.BigEndian.PutUint16(port)
	for i, e := range r.Exprs[:max(len(r.Exprs)-1, 0)] {
		p, ok := e.(*expr.Payload)
		if !ok || p.Base != expr.PayloadBaseTransportHeader || p.Offset != 2 || p.Len != 2 {
			continue
		}
		if c, ok := r.Exprs[i+1].(*expr.Cmp); ok && c.Op == expr.CmpOpEq && bytes.Equal(c.Data, want) {
			return true
		}
	}
	return false
}

func (in *incoming) unsubscribe(sub *subscription) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.unsubscribeLocked(sub)
}

// handOver gives the subscriptions of a client's old connection to its
// new one, which subscribes again right after its hello: connections to
// the ports go to the new connection meanwhile, and the redirects stay in
// place (removing them and adding them again would let connections made
// in between reach the target's app, and the new redirect would then cut
// them). The old connection's streams end later and find nothing to
// unsubscribe.
func (in *incoming) handOver(old, sess *yamux.Session) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for port, list := range in.subs {
		for i, sub := range list {
			if sub.sess == old {
				moved := *sub
				moved.sess, moved.handedOver = sess, true
				list[i] = &moved
			}
		}
		in.subs[port] = list
	}
}

// dropHandedOver ends the subscriptions handed over to sess that it did
// not make again, when it ends.
func (in *incoming) dropHandedOver(sess *yamux.Session) {
	in.mu.Lock()
	defer in.mu.Unlock()
	var subs []*subscription
	for _, list := range in.subs {
		for _, sub := range list {
			if sub.sess == sess && sub.handedOver {
				subs = append(subs, sub)
			}
		}
	}
	for _, sub := range subs {
		in.unsubscribeLocked(sub)
	}
}

func (in *incoming) unsubscribeLocked(sub *subscription) {
	list := in.subs[sub.port]
	i := slices.Index(list, sub)
	if i < 0 {
		return
	}
	list = slices.Delete(list, i, i+1)
	if len(list) > 0 {
		in.subs[sub.port] = list
	} else {
		delete(in.subs, sub.port)
		if r := in.rules[sub.port]; r != nil && in.table != nil {
			if in.nft.DelRule(r) == nil {
				in.nft.Flush()
			}
		}
		delete(in.rules, sub.port)
	}
	in.teardownIfUnusedLocked()
	in.a.log.Info("unsubscribed", "port", sub.port)
}

func (in *incoming) ensureTable() error {
	if in.table != nil {
		return nil
	}
	var opts []nftables.ConnOption
	if in.a.target.netns != nil {
		opts = append(opts, nftables.WithNetNSFd(int(in.a.target.netns.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: tableName()})
	ch := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	// The namespace tracks connections only while a rule needs it, and
	// the redirect rules come and go with the subscriptions: after the
	// last one is deleted, the redirected connections that are still open
	// would lose their translation (their next packet reaches the app's
	// port, which resets them). A chain no packet enters holds one rule
	// that reads the connection state, which keeps conntrack on for as
	// long as the table lives.
	keep := c.AddChain(&nftables.Chain{Name: "keep-conntrack", Table: t})
	c.AddRule(&nftables.Rule{Table: t, Chain: keep, Exprs: []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: create table %s in the target's network namespace (the agent needs NET_ADMIN): %w", t.Name, err)
	}
	in.nft, in.table, in.chain = c, t, ch
	return nil
}

// teardownIfUnusedLocked removes the table and the listener once no
// session subscribes to a port and no redirected connection is left.
func (in *incoming) teardownIfUnusedLocked() {
	if len(in.subs) == 0 && len(in.conns) == 0 {
		in.teardownLocked()
	}
}

// teardownLocked removes the table and the listener.
func (in *incoming) teardownLocked() {
	if in.table != nil {
		in.nft.DelTable(in.table)
		in.nft.Flush()
		in.table, in.chain = nil, nil
		in.rules = map[uint16]*nftables.Rule{}
	}
	if in.ln != nil {
		in.ln.Close()
		in.ln = nil
	}
}

// close removes everything, whatever is still subscribed. The redirected
// connections still open are closed while their translation lasts, so that
// their peers see the close (a FIN) now rather than a reset on their next
// request, and the table goes once they are done (or after closeWait).
func (in *incoming) close() {
	in.mu.Lock()
	in.subs = map[uint16][]*subscription{}
	if in.table != nil && len(in.rules) > 0 {
		for _, r := range in.rules {
			in.nft.DelRule(r)
		}
		in.nft.Flush()
		in.rules = map[uint16]*nftables.Rule{}
	}
	if in.ln != nil {
		in.ln.Close()
		in.ln = nil
	}
	for c := range in.conns {
		c.Close()
	}
	in.mu.Unlock()
	deadline := time.Now().Add(closeWait)
	for {
		in.mu.Lock()
		n := len(in.conns)
		if n == 0 || time.Now().After(deadline) {
			in.teardownLocked()
			in.mu.Unlock()
			return
		}
		in.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
}

// closeWait bounds how long an exiting agent waits for the handlers of
// the connections it closed.
const closeWait = 2 * time.Second

func (in *incoming) ensureListener() error {
	if in.ln != nil {
		return nil
	}
	var ln net.Listener
	err := in.a.target.inNetns(func() error {
		var err error
		ln, err = net.Listen("tcp", ":0")
		return err
	})
	if err != nil {
		return fmt.Errorf("listen in the target's network namespace: %w", err)
	}
	in.ln = ln
	in.lnPort = uint16(ln.Addr().(*net.TCPAddr).Port)
	go in.accept(ln)
	return nil
}

func (in *incoming) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		tc := c.(*net.TCPConn)
		in.mu.Lock()
		in.conns[tc] = struct{}{}
		in.mu.Unlock()
		go func() {
			in.handle(tc)
			in.mu.Lock()
			delete(in.conns, tc)
			in.teardownIfUnusedLocked()
			in.mu.Unlock()
		}()
	}
}

// handle delivers one redirected connection to its subscriber.
func (in *incoming) handle(c *net.TCPConn) {
	defer c.Close()
	orig, err := originalDst(c)
	if err != nil {
		in.a.log.Warn("incoming: no original destination", "err", err)
		return
	}
	in.mu.Lock()
	subs := slices.Clone(in.subs[orig.Port()])
	in.mu.Unlock()
	if len(subs) == 0 {
		return
	}
	sub := subs[0]
	if sub.filter != nil && sub.mirror {
		in.mirrorFiltered(c, orig, sub)
		return
	}
	if sub.filter != nil && sub.tls != nil {
		in.serveTLS(c, orig, sub.tls)
		return
	}
	if sub.filter != nil {
		in.serveFiltered(c, orig)
		return
	}
	st, err := in.a.openStream(sub.sess)
	if isSessionFull(err) {
		// The session has all the connections it may: this one is
		// the target's app's, as without mirrord (mirrored: not
		// copied).
		in.a.log.Warn("incoming: session at its limit; the target's app serves the connection", "port", sub.port, "err", err)
		if app, err := in.dialApp(orig); err == nil {
			relay.Splice(c, app)
			app.Close()
		}
		return
	}
	if err != nil {
		return
	}
	defer st.Close()
	if err := protocol.Write(st, &protocol.Incoming{Port: sub.port, Source: c.RemoteAddr().String(), Dest: orig.String(), Mirror: sub.mirror}); err != nil {
		return
	}
	if !sub.mirror {
		// When the session ends (its connection dropped), the peer's
		// connection ends with it, whatever the stream reports.
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-sub.sess.CloseChan():
				c.Close()
			case <-done:
			}
		}()
		relay.Splice(st, c)
		return
	}
	// Mirror: the original app answers; the client gets a copy of what
	// the peer sends.
	app, err := in.dialApp(orig)
	if err != nil {
		in.a.log.Warn("incoming: mirror: original app unreachable", "addr", orig.String(), "err", err)
		return
	}
	defer app.Close()
	go io.Copy(io.Discard, st) // the local app's answers are dropped
	done := make(chan struct{})
	go func() {
		relay.Copy(c, app)
		close(done)
	}()
	io.Copy(io.MultiWriter(app, writerIgnoringErrors{st}), c)
	relay.CloseWrite(app)
	st.Close()
	<-done
}

// writerIgnoringErrors keeps the real connection going when the copy
// stream fails (for example the local app closed early).
type writerIgnoringErrors struct{ w io.Writer }

func (w writerIgnoringErrors) Write(b []byte) (int, error) {
	w.w.Write(b)
	return len(b), nil
}

// originalDst reads where a redirected connection was going.
func originalDst(c *net.TCPConn) (netAddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netAddrPort{}, err
	}
	var out netAddrPort
	var serr error
	cerr := raw.Control(func(fd uintptr) {
		if c.LocalAddr().(*net.TCPAddr).IP.To4() != nil {
			var sa unix.RawSockaddrInet4
			l := uint32(unsafe.Sizeof(sa))
			_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
			if e != 0 {
				serr = e
				return
			}
			out = netAddrPort{ip: net.IP(sa.Addr[:]).String(), port: uint16(sa.Port>>8 | sa.Port<<8)}
			return
		}
		var sa unix.RawSockaddrInet6
		l := uint32(unsafe.Sizeof(sa))
		const ip6tSoOriginalDst = 80
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_IPV6, ip6tSoOriginalDst, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			serr = e
			return
		}
		out = netAddrPort{ip: net.IP(sa.Addr[:]).String(), port: uint16(sa.Port>>8 | sa.Port<<8)}
	})
	if cerr != nil {
		return out, cerr
	}
	if serr != nil {
		return out, errors.New("SO_ORIGINAL_DST: " + serr.Error())
	}
	return out, nil
}

type netAddrPort struct {
	ip   string
	port uint16
}

func (a netAddrPort) Port() uint16   { return a.port }
func (a netAddrPort) String() string { return net.JoinHostPort(a.ip, strconv.Itoa(int(a.port))) }
