package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/httpfilter"
	"github.com/mirrord-go/mirrord/intproxy"
	"github.com/mirrord-go/mirrord/protocol"
)

// remotePort maps a local listening port to the target port it takes
// traffic from (feature.network.incoming.port_mapping), and says whether
// the port is to be subscribed at all and with which HTTP filter:
// ignore_ports stay local; with an http_filter (steal, or mirror of only
// the matching requests), ports in http_filter.ports
// are filtered, other ports are taken whole only if "ports" names them
// (the spec's rules); otherwise "ports", when set, limits the ports.
func remotePort(in config.IncomingConfig, local uint16) (remote uint16, filter *httpfilter.Spec, ok bool) {
	if slices.Contains(in.IgnorePorts, local) {
		return 0, nil, false
	}
	remote = local
	for _, pm := range in.PortMapping {
		if pm[0] == local {
			remote = pm[1]
		}
	}
	if in.Mode != config.IncomingOff && in.HTTPFilter.IsSet() {
		if slices.Contains(in.HTTPFilter.Ports, remote) {
			return remote, filterSpec(in.HTTPFilter), true
		}
		return remote, nil, slices.Contains(in.Ports, remote)
	}
	if len(in.Ports) > 0 && !slices.Contains(in.Ports, remote) {
		return 0, nil, false
	}
	return remote, nil, true
}

// filterSpec turns the config's http_filter into the protocol's form.
func filterSpec(h config.HTTPFilterConfig) *httpfilter.Spec {
	inner := func(list []config.InnerFilter) []httpfilter.Spec {
		out := make([]httpfilter.Spec, len(list))
		for i, f := range list {
			out[i] = httpfilter.Spec{Header: deref(f.Header), Path: deref(f.Path), Method: deref(f.Method)}
		}
		return out
	}
	var s httpfilter.Spec
	switch {
	case h.HeaderFilter != nil:
		s.Header = *h.HeaderFilter
	case h.PathFilter != nil:
		s.Path = *h.PathFilter
	case h.AllOf != nil:
		s.AllOf = inner(h.AllOf)
	case h.AnyOf != nil:
		s.AnyOf = inner(h.AnyOf)
	}
	if h.MethodFilter != nil {
		// A method filter narrows whatever else is set.
		m := httpfilter.Spec{Method: *h.MethodFilter}
		if s.Header == "" && s.Path == "" && s.AllOf == nil && s.AnyOf == nil {
			s = m
		} else {
			s = httpfilter.Spec{AllOf: []httpfilter.Spec{s, m}}
		}
	}
	return &s
}

// subscription is the agent request for the target's port remote, with
// the incoming mode and agent.flush_connections of cfg.
// A port that tls_ports lists gets its TLS settings when its steal is
// filtered.
func subscription(cfg *config.Config, remote uint16, filter *httpfilter.Spec, override bool) protocol.Subscribe {
	steal := cfg.Feature.Network.Incoming.Mode == config.IncomingSteal
	mode := "mirror"
	if steal {
		mode = "steal"
	}
	tlsSpec, _ := tlsPortSpec(cfg.Feature.Network.Incoming, remote, filter != nil)
	return protocol.Subscribe{Port: remote, Mode: mode, Filter: filter, Override: override,
		Flush: steal && cfg.Agent.FlushConnections, TLS: tlsSpec}
}

// tlsSubscribeFailed tells the user, once per port, that the agent could
// not end TLS on a port tls_ports lists (its certificate, its key, the
// port itself): the port stays with the target's app.
func tlsSubscribeFailed(in config.IncomingConfig, remote uint16, err error, log *slog.Logger) bool {
	spec, i := tlsPortSpec(in, remote, true)
	if spec == nil {
		return false
	}
	var e *protocol.ErrorReply
	msg := err.Error()
	if errors.As(err, &e) {
		msg = e.Message
	}
	fmt.Fprintf(os.Stderr, "mirrord: error: feature.network.incoming.tls_ports[%d]: %s; port %d is left to the target's app\n", i, msg, remote)
	log.Error("incoming: TLS port not stolen", "port", remote, "err", err)
	return true
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// dialFunc connects a delivered connection from the target's client to
// the local port; release is called once the delivery ended.
type dialFunc func(ctx context.Context, local uint16, client netip.AddrPort) (c net.Conn, release func(), err error)

// dialLocal connects to the program's server on this machine's loopback:
// 127.0.0.1, or ::1 for a server that listens on IPv6 only. The proxy
// remembers the client, so that the program's accept and getpeername show
// it rather than mirrord's end of the connection (intproxy/peers.go).
func dialLocal(proxy *intproxy.Proxy) dialFunc {
	return func(ctx context.Context, port uint16, client netip.AddrPort) (net.Conn, func(), error) {
		c, release, err := proxy.DialProgram(ctx, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port), client)
		if err == nil {
			return c, release, nil
		}
		if c6, release6, err6 := proxy.DialProgram(ctx, netip.AddrPortFrom(netip.IPv6Loopback(), port), client); err6 == nil {
			return c6, release6, nil
		}
		return nil, nil, err
	}
}

// ServeIncoming takes the target's traffic for the ports listening()
// reports and delivers it to them on this machine's loopback, until ctx
// ends.
func (s *Session) ServeIncoming(ctx context.Context, listening func() map[uint16]bool) {
	serveIncomingPorts(ctx, s.Config, s.Proxy, listening, s.log)
}

// serveIncomingPorts subscribes every port listening() reports (polled)
// and delivers the connections to the program's servers on this machine's
// loopback, until ctx ends.
func serveIncomingPorts(ctx context.Context, cfg *config.Config, proxy *intproxy.Proxy, listening func() map[uint16]bool, log *slog.Logger) {
	in := cfg.Feature.Network.Incoming
	if in.Mode == config.IncomingOff {
		return
	}
	steal := in.Mode == config.IncomingSteal
	hd, err := newHTTPSDelivery(in.HTTPSDelivery)
	if err != nil && len(in.TLSPorts) > 0 {
		fmt.Fprintf(os.Stderr, "mirrord: error: %v; the ports of feature.network.incoming.tls_ports are left to the target's app\n", err)
		in.TLSPorts = nil
	}
	ports := &portMap{m: map[uint16]uint16{}}
	go deliverIncoming(ctx, proxy, ports, log, dialLocal(proxy), hd)
	subs := map[uint16]func(){}
	defer func() {
		for _, cancel := range subs {
			cancel()
		}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		for local := range listening() {
			remote, filter, ok := remotePort(in, local)
			if !ok || subs[remote] != nil {
				continue
			}
			// Record the mapping before subscribing: connections may
			// arrive as soon as the agent confirms.
			ports.set(remote, local)
			cancel, err := proxy.Subscribe(ctx, subscription(cfg, remote, filter, in.OnConcurrentSteal == "override"))
			if err != nil {
				log.Warn("incoming: subscribe", "port", remote, "err", err)
				subs[remote] = func() {} // don't retry every tick
				if filter != nil && !portTaken(err) && tlsSubscribeFailed(in, remote, err, log) {
					continue
				}
				if steal && portTaken(err) {
					concurrentSteal(in.OnConcurrentSteal, remote, log)
				}
				continue
			}
			subs[remote] = cancel
			log.Info("incoming: subscribed", "remote", remote, "local", local, "steal", steal)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// portTaken says whether the agent refused a subscription because another
// session already takes the port.
func portTaken(err error) bool {
	var e *protocol.ErrorReply
	return errors.As(err, &e) && e.Code == "EADDRINUSE"
}

// concurrentSteal applies feature.network.incoming.on_concurrent_steal
// when another session already takes port (steals or mirrors it whole):
// "continue" goes on without the port, with a warning; "abort" (the
// default) ends the program, and so the session, with an error.
// ("override" never gets here: the agent hands the port over.)
//
// The program is ended the way the user would end it, with a SIGTERM to
// mirrord, which passes it on and exits with the program's status.
func concurrentSteal(mode config.ConcurrentSteal, port uint16, log *slog.Logger) {
	const key = "feature.network.incoming.on_concurrent_steal"
	switch mode {
	case "continue":
		fmt.Fprintf(os.Stderr, "mirrord: warning: port %d of the target is already taken by another mirrord session; going on without it (%s is \"continue\")\n", port, key)
		return
	default:
		fmt.Fprintf(os.Stderr, "mirrord: port %d of the target is already taken by another mirrord session; stopping (%s is \"abort\"; \"continue\" goes on without the port)\n", port, key)
	}
	log.Error("incoming: port taken by another session", "port", port, "on_concurrent_steal", string(mode))
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
}

// portMap maps the target's ports to the local ports their connections go
// to; the subscriber fills it while connections already arrive.
type portMap struct {
	mu sync.Mutex
	m  map[uint16]uint16
}

func (pm *portMap) set(remote, local uint16) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	pm.m[remote] = local
}

func (pm *portMap) get(remote uint16) (uint16, bool) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	local, ok := pm.m[remote]
	return local, ok
}

// deliverIncoming serves the connections the agent delivers until the
// session ends: each goes to the local port its target port maps to,
// connected with dial.
// connected with dial, and with TLS per hd (nil: https_delivery could not
// be read; the agent then sends no TLS connection).
func deliverIncoming(ctx context.Context, proxy *intproxy.Proxy, ports *portMap, log *slog.Logger, dial dialFunc, hd *httpsDelivery) {
	proxy.ServeIncoming(func(inc *protocol.Incoming, conn net.Conn) {
		local, ok := ports.get(inc.Port)
		if !ok {
			conn.Close()
			return
		}
		go deliverOne(ctx, inc, conn, local, log, dial, hd)
	})
}

// deliverOne connects one incoming connection to the local port.
func deliverOne(ctx context.Context, inc *protocol.Incoming, conn net.Conn, local uint16, log *slog.Logger, dial dialFunc, hd *httpsDelivery) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	app, release, err := dial(dctx, local, intproxy.ParseSource(inc.Source))
	if err != nil {
		log.Warn("incoming: nothing accepts on the local port", "port", local, "err", err)
		conn.Close()
		return
	}
	defer release()
	if inc.TLS != nil && hd == nil {
		log.Warn("incoming: HTTPS delivery", "err", deliveryKey+" could not be read")
		app.Close()
		conn.Close()
		return
	}
	if inc.TLS != nil {
		wrapped, proto, err := hd.wrap(dctx, inc, app)
		if err != nil {
			// The peer's request gets no answer from here: its stream
			// ends, and the agent answers it 502 (HTTP/2) or closes.
			log.Warn("incoming: HTTPS delivery to the local app", "port", local, "err", err)
			app.Close()
			conn.Close()
			return
		}
		scheme := "https"
		if hd.plain {
			scheme = "http"
		}
		// More connections for the same peer connection, when its
		// HTTP/2 streams are passed on over HTTP/1.1.
		var releases []func()
		defer func() {
			for _, r := range releases {
				r()
			}
		}()
		var mu sync.Mutex
		inc1, tls1 := *inc, *inc.TLS
		tls1.ALPN, inc1.TLS = "http/1.1", &tls1
		more := func(ctx context.Context) (net.Conn, error) {
			c, rel, err := dial(ctx, local, intproxy.ParseSource(inc.Source))
			if err != nil {
				return nil, err
			}
			mu.Lock()
			releases = append(releases, rel)
			mu.Unlock()
			w, _, err := hd.wrap(ctx, &inc1, c)
			if err != nil {
				c.Close()
			}
			return w, err
		}
		deliverTLS(inc, conn, wrapped, proto, scheme, more)
		return
	}
	intproxy.DeliverTo(inc, conn, app)
}

// Reverse subscribes the target's ports (revs: {remote, local} pairs) and delivers their
// connections to local ports, with feature.network.incoming's mode
// (mirror by default, steal with --steal or the config) and HTTP filter.
func (s *Session) Reverse(ctx context.Context, revs [][2]uint16) ([]func(), error) {
	proxy, cfg, log := s.Proxy, s.Config, s.log
	in := cfg.Feature.Network.Incoming
	steal := in.Mode == config.IncomingSteal
	hd, err := newHTTPSDelivery(in.HTTPSDelivery)
	if err != nil && len(in.TLSPorts) > 0 {
		return nil, err
	}
	ports := &portMap{m: map[uint16]uint16{}}
	var cancels []func()
	for _, r := range revs {
		var filter *httpfilter.Spec
		if steal && in.HTTPFilter.IsSet() {
			filter = filterSpec(in.HTTPFilter)
		}
		cancel, err := proxy.Subscribe(ctx, subscription(cfg, r[0], filter, false))
		if err != nil {
			for _, c := range cancels {
				c()
			}
			return nil, err
		}
		cancels = append(cancels, cancel)
		ports.set(r[0], r[1])
	}
	// The local service is not under mirrord: nobody asks for the client.
	go deliverIncoming(ctx, proxy, ports, log, func(ctx context.Context, local uint16, _ netip.AddrPort) (net.Conn, func(), error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(local))))
		return c, func() {}, err
	}, hd)
	return cancels, nil
}

// Mirror subscribes the target's ports in mirror mode, whatever
// feature.network.incoming says (`mirrord dump` only ever looks: the
// target's app keeps answering), and hands each connection to h: conn
// carries a copy of the peer's bytes and ends when the peer's connection
// does. Connections arrive until cancel is called or the session ends.
// On an error no subscription is left.
func (s *Session) Mirror(ctx context.Context, ports []uint16, h intproxy.IncomingHandler) (cancel func(), err error) {
	var cancels []func()
	cancel = func() {
		for _, c := range cancels {
			c()
		}
	}
	for _, p := range ports {
		c, err := s.Proxy.Subscribe(ctx, protocol.Subscribe{Port: p, Mode: "mirror"})
		if err != nil {
			cancel()
			return nil, err
		}
		cancels = append(cancels, c)
		s.log.Info("incoming: mirroring", "port", p)
	}
	go s.Proxy.ServeIncoming(func(inc *protocol.Incoming, conn net.Conn) {
		if !inc.Mirror {
			// Not ours to take: a mirror subscription never gets a
			// stolen connection.
			conn.Close()
			return
		}
		h(inc, conn)
	})
	return cancel, nil
}
