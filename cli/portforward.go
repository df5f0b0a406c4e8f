package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/intproxy"
	"github.com/mirrord-go/mirrord/relay"
)

// forward is one parsed -L mapping.
type forward struct {
	udp        bool
	localPort  uint16
	remoteHost string // a name (resolved in the cluster per connection) or an IP
	remotePort uint16
}

func (f forward) remote() string {
	return net.JoinHostPort(f.remoteHost, strconv.Itoa(int(f.remotePort)))
}

// parseForward parses [udp/|tcp/][LOCAL_PORT:]REMOTE_HOST:REMOTE_PORT.
// REMOTE_HOST may be an IPv6 address in brackets.
func parseForward(s string) (forward, error) {
	var f forward
	rest := s
	if p, after, ok := strings.Cut(rest, "/"); ok && (p == "udp" || p == "tcp") {
		f.udp = p == "udp"
		rest = after
	}
	bad := func(why string) (forward, error) {
		return forward{}, fmt.Errorf("-L %q: %s; expected [udp/][LOCAL_PORT:]REMOTE_HOST:REMOTE_PORT, e.g. 8080:py-serv:80", s, why)
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return bad("no remote port")
	}
	port, err := strconv.ParseUint(rest[i+1:], 10, 16)
	if err != nil || port == 0 {
		return bad("invalid remote port " + strconv.Quote(rest[i+1:]))
	}
	f.remotePort = uint16(port)
	head := rest[:i]
	if strings.HasSuffix(head, "]") {
		open := strings.LastIndexByte(head, '[')
		if open < 0 {
			return bad("unbalanced brackets")
		}
		f.remoteHost = head[open+1 : len(head)-1]
		head = strings.TrimSuffix(head[:open], ":")
	} else if j := strings.LastIndexByte(head, ':'); j >= 0 {
		f.remoteHost = head[j+1:]
		head = head[:j]
	} else {
		f.remoteHost, head = head, ""
	}
	if f.remoteHost == "" {
		return bad("no remote host")
	}
	f.localPort = f.remotePort
	if head != "" {
		lp, err := strconv.ParseUint(head, 10, 16)
		if err != nil || lp == 0 {
			return bad("invalid local port " + strconv.Quote(head))
		}
		f.localPort = uint16(lp)
	}
	return f, nil
}

// Run forwards until interrupted.
func (c *PortForwardCmd) Run(env *Env) error {
	if len(c.Local) == 0 && len(c.Remote) == 0 {
		return errors.New("port-forward: give at least one -L or -R mapping")
	}
	var fwds []forward
	var revs []reverse
	for _, r := range c.Remote {
		rv, err := parseReverse(r)
		if err != nil {
			return err
		}
		revs = append(revs, rv)
	}
	for _, l := range c.Local {
		f, err := parseForward(l)
		if err != nil {
			return err
		}
		fwds = append(fwds, f)
	}
	var s []config.Setting
	s = append(s, c.TargetFlags.settings()...)
	s = append(s, c.AgentFlags.settings()...)
	s = append(s, c.KubeFlags.settings()...)
	prog := newProgress(env)
	cfg, err := loadConfig(env, prog, &c.ConfigFlags, s)
	if err != nil {
		return err
	}
	if len(revs) > 0 && cfg.Target.Targetless() && c.AgentAddr == "" && cfg.ConnectTCP == nil {
		return errors.New("port-forward -R takes traffic arriving at a target: give one with -t (e.g. -t deploy/api)")
	}
	srv, err := startServing(env, cfg, prog, c.AgentAddr)
	if err != nil {
		return err
	}
	defer srv.close()
	ctx, log, sess, proxy := srv.ctx, srv.log, srv.sess, srv.sess.Proxy

	var wg sync.WaitGroup
	var closers []io.Closer
	for _, f := range fwds {
		cl, err := startForward(ctx, &wg, proxy, f, log)
		if err != nil {
			for _, c := range closers {
				c.Close()
			}
			return err
		}
		closers = append(closers, cl...)
		proto := "tcp"
		if f.udp {
			proto = "udp"
		}
		fmt.Fprintf(env.Stdout, "forwarding %s 127.0.0.1:%d -> %s (via %s)\n", proto, f.localPort, f.remote(), sess.Via)
	}
	if len(revs) > 0 {
		pairs := make([][2]uint16, len(revs))
		for i, r := range revs {
			pairs[i] = [2]uint16{r.remotePort, r.localPort}
		}
		cancels, err := sess.Reverse(ctx, pairs)
		if err != nil {
			return err
		}
		defer func() {
			for _, c := range cancels {
				c()
			}
		}()
		for _, r := range revs {
			fmt.Fprintf(env.Stdout, "forwarding %s:%d -> 127.0.0.1:%d (%s)\n", sess.Via, r.remotePort, r.localPort, cfg.Feature.Network.Incoming.Mode)
		}
	}
	select {
	case <-ctx.Done():
	case <-proxy.Done():
		err = errors.New("port-forward: lost the connection to the agent")
	}
	for _, c := range closers {
		c.Close()
	}
	wg.Wait()
	return err
}

// startForward listens on the IPv4 and (where available) IPv6 loopback.
func startForward(ctx context.Context, wg *sync.WaitGroup, proxy *intproxy.Proxy, f forward, log *slog.Logger) ([]io.Closer, error) {
	var closers []io.Closer
	for i, host := range []string{"127.0.0.1", "::1"} {
		addr := net.JoinHostPort(host, strconv.Itoa(int(f.localPort)))
		if f.udp {
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				if i == 0 {
					return closers, fmt.Errorf("-L %s: %w", addr, err)
				}
				continue
			}
			closers = append(closers, pc)
			wg.Add(1)
			go func() { defer wg.Done(); serveUDPForward(ctx, pc, proxy, f, log) }()
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if i == 0 {
				return closers, fmt.Errorf("-L %s: %w", addr, err)
			}
			continue
		}
		closers = append(closers, ln)
		wg.Add(1)
		go func() { defer wg.Done(); serveTCPForward(ctx, ln, proxy, f, log) }()
	}
	return closers, nil
}

// remoteAddr resolves the forward's host in the cluster: on every new
// connection, so that a rescheduled service is found again.
func remoteAddr(ctx context.Context, proxy *intproxy.Proxy, f forward) (netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	addrs, err := proxy.ResolveRemote(ctx, f.remoteHost)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(addrs[0], f.remotePort), nil
}

func serveTCPForward(ctx context.Context, ln net.Listener, proxy *intproxy.Proxy, f forward, log *slog.Logger) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			dst, err := remoteAddr(ctx, proxy, f)
			if err != nil {
				log.Warn("port-forward: resolve", "host", f.remoteHost, "err", err)
				return
			}
			dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			out, err := proxy.DialRemoteTCP(dctx, dst)
			cancel()
			if err != nil {
				log.Warn("port-forward: connect", "dst", dst.String(), "err", err)
				return
			}
			defer out.Close()
			relay.Splice(c, out)
		}()
	}
}

// serveUDPForward keeps one remote flow per local client address.
func serveUDPForward(ctx context.Context, pc net.PacketConn, proxy *intproxy.Proxy, f forward, log *slog.Logger) {
	var mu sync.Mutex
	flows := map[string]net.Conn{}
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			mu.Lock()
			for _, fl := range flows {
				fl.Close()
			}
			mu.Unlock()
			return
		}
		mu.Lock()
		flow := flows[from.String()]
		mu.Unlock()
		if flow == nil {
			dst, err := remoteAddr(ctx, proxy, f)
			if err != nil {
				log.Warn("port-forward: resolve", "host", f.remoteHost, "err", err)
				continue
			}
			flow, err = proxy.DialRemoteUDP(ctx, dst)
			if err != nil {
				log.Warn("port-forward: udp", "dst", dst.String(), "err", err)
				continue
			}
			mu.Lock()
			flows[from.String()] = flow
			mu.Unlock()
			go func(flow net.Conn, client net.Addr) {
				rb := make([]byte, 65535)
				for {
					flow.SetReadDeadline(time.Now().Add(2 * time.Minute))
					n, err := flow.Read(rb)
					if err != nil {
						break
					}
					pc.WriteTo(rb[:n], client)
				}
				flow.Close()
				mu.Lock()
				delete(flows, client.String())
				mu.Unlock()
			}(flow, from)
		}
		flow.Write(buf[:n])
	}
}

// reverse is one parsed -R mapping.
type reverse struct {
	remotePort, localPort uint16
}

// parseReverse parses [REMOTE_PORT:]LOCAL_PORT.
func parseReverse(s string) (reverse, error) {
	bad := fmt.Errorf("-R %q: expected [REMOTE_PORT:]LOCAL_PORT, e.g. 80:8080", s)
	rp, lp, two := strings.Cut(s, ":")
	if !two {
		lp = rp
	}
	r, err1 := strconv.ParseUint(rp, 10, 16)
	l, err2 := strconv.ParseUint(lp, 10, 16)
	if err1 != nil || err2 != nil || r == 0 || l == 0 {
		return reverse{}, bad
	}
	return reverse{remotePort: uint16(r), localPort: uint16(l)}, nil
}
