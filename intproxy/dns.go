package intproxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/mirrord-go/mirrord/addrfilter"
	"github.com/mirrord-go/mirrord/protocol"
)

// DNS answers a query from the program (wire format): through the agent
// with the target's resolvers, or with this machine's, as
// feature.network.dns says. Addresses in the answer are remembered, so that
// outgoing filters written with names match connections to them.
func (p *Proxy) DNS(ctx context.Context, query []byte) ([]byte, error) {
	msg := new(dns.Msg)
	if err := msg.Unpack(query); err != nil {
		return nil, fmt.Errorf("malformed DNS query: %w", err)
	}
	var answer []byte
	var err error
	if p.dnsRemote(msg) {
		answer, err = p.remoteDNS(ctx, query)
	} else {
		answer, err = p.localDNS.exchange(ctx, msg)
	}
	if err != nil {
		return nil, err
	}
	p.remember(answer)
	return answer, nil
}

func (p *Proxy) dnsRemote(msg *dns.Msg) bool {
	if !p.cfg.Feature.Network.DNS.Enabled {
		return false
	}
	if len(msg.Question) == 0 {
		return true
	}
	name := strings.TrimSuffix(msg.Question[0].Name, ".")
	t := addrfilter.Target{Name: name, Port: 53}
	if a, err := netip.ParseAddr(name); err == nil {
		t.Addr = a
	}
	switch {
	case len(p.dns.Remote) > 0:
		return anyFilter(p.dns.Remote, t)
	case len(p.dns.Local) > 0:
		return !anyFilter(p.dns.Local, t)
	}
	return true
}

func anyFilter(fs []addrfilter.Filter, t addrfilter.Target) bool {
	for _, f := range fs {
		if f.Match(t) {
			return true
		}
	}
	return false
}

func (p *Proxy) remoteDNS(ctx context.Context, query []byte) ([]byte, error) {
	st, err := p.open(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := protocol.Write(st, &protocol.DNSRequest{Query: query}); err != nil {
		return nil, err
	}
	reply, err := protocol.ReadReply[*protocol.DNSReply](st)
	if err != nil {
		return nil, fmt.Errorf("remote DNS: %w", err)
	}
	return reply.Answer, nil
}

// remember records the addresses of an answer (wire format) under the
// names that led to them (the question and every CNAME on the way).
func (p *Proxy) remember(answer []byte) {
	msg := new(dns.Msg)
	if msg.Unpack(answer) != nil || len(msg.Question) == 0 {
		return
	}
	names := []string{msg.Question[0].Name}
	for _, rr := range msg.Answer {
		if c, ok := rr.(*dns.CNAME); ok {
			names = append(names, c.Target)
		}
	}
	addrs := answerAddrs(msg)
	for _, n := range names {
		for _, a := range addrs {
			p.names.add(n, a)
		}
	}
}

// answerAddrs returns the A and AAAA addresses of an answer.
func answerAddrs(msg *dns.Msg) []netip.Addr {
	var addrs []netip.Addr
	for _, rr := range msg.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
				addrs = append(addrs, a)
			}
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(rr.AAAA); ok {
				addrs = append(addrs, a.Unmap())
			}
		}
	}
	return addrs
}

// lookup asks one question of the target's resolvers (remote) or this
// machine's, and returns the answer in wire format.
func (p *Proxy) lookup(ctx context.Context, name string, qtype uint16, remote bool) ([]byte, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	if !remote {
		return p.localDNS.exchange(ctx, q)
	}
	b, err := q.Pack()
	if err != nil {
		return nil, err
	}
	return p.remoteDNS(ctx, b)
}

// resolvesTo reports whether name resolves to addr, asking the target's
// resolvers (remote) or this machine's.
func (p *Proxy) resolvesTo(ctx context.Context, name string, addr netip.Addr, remote bool) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		if answer, err := p.lookup(ctx, name, qtype, remote); err == nil {
			p.remember(answer)
		}
	}
	return p.names.has(name, addr)
}

// nameCache maps names to the addresses they resolved to recently.
type nameCache struct {
	mu sync.Mutex
	m  map[string]map[netip.Addr]time.Time
}

const nameTTL = 10 * time.Minute

func newNameCache() *nameCache { return &nameCache{m: map[string]map[netip.Addr]time.Time{}} }

func canonical(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

func (c *nameCache) add(name string, a netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := canonical(name)
	if c.m[n] == nil {
		c.m[n] = map[netip.Addr]time.Time{}
	}
	c.m[n][a] = time.Now().Add(nameTTL)
}

func (c *nameCache) has(name string, a netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.m[canonical(name)][a.Unmap()]
	return ok && time.Now().Before(exp)
}

// localResolver asks this machine's nameservers (from /etc/resolv.conf of
// the mirrord process, which is outside the sandbox).
type localResolver struct {
	once sync.Once
	cfg  *dns.ClientConfig
	err  error
}

func newLocalResolver() *localResolver { return &localResolver{} }

func (r *localResolver) exchange(ctx context.Context, msg *dns.Msg) ([]byte, error) {
	r.once.Do(func() { r.cfg, r.err = dns.ClientConfigFromFile("/etc/resolv.conf") })
	if r.err != nil {
		return nil, fmt.Errorf("local DNS: %w", r.err)
	}
	var lastErr error
	for _, s := range r.cfg.Servers {
		addr := net.JoinHostPort(s, r.cfg.Port)
		c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
		resp, _, err := c.ExchangeContext(ctx, msg, addr)
		if err == nil && resp.Truncated {
			c.Net = "tcp"
			resp, _, err = c.ExchangeContext(ctx, msg, addr)
		}
		if err != nil {
			lastErr = err
			continue
		}
		resp.Id = msg.Id
		return resp.Pack()
	}
	return nil, fmt.Errorf("local DNS: every nameserver failed: %v", lastErr)
}

// ResolveRemote resolves name with the target's resolvers, expanding it
// with the target's search domains as the pod's own resolver would (a name
// with fewer dots than ndots is tried with each search domain first).
func (p *Proxy) ResolveRemote(ctx context.Context, name string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		return []netip.Addr{a}, nil
	}
	var candidates []string
	r := p.hello.Resolver
	ndots := r.Ndots
	if ndots == 0 {
		ndots = 1
	}
	if !strings.HasSuffix(name, ".") && strings.Count(name, ".") < ndots {
		for _, s := range r.Search {
			candidates = append(candidates, name+"."+strings.TrimSuffix(s, "."))
		}
	}
	candidates = append(candidates, strings.TrimSuffix(name, "."))
	for _, cand := range candidates {
		var addrs []netip.Addr
		for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
			answer, err := p.lookup(ctx, cand, qtype, true)
			if err != nil {
				return nil, err
			}
			m := new(dns.Msg)
			if m.Unpack(answer) != nil {
				continue
			}
			addrs = append(addrs, answerAddrs(m)...)
		}
		if len(addrs) > 0 {
			return addrs, nil
		}
	}
	return nil, fmt.Errorf("%s: no such host in the cluster", name)
}
