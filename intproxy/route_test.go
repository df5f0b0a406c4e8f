package intproxy

import (
	"context"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/mirrord-go/mirrord/addrfilter"
	"github.com/mirrord-go/mirrord/config"
)

func proxyFor(t testing.TB, doc string) *Proxy {
	t.Helper()
	tree, err := config.ParseBytes([]byte(doc), config.JSON, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Decode(tree)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{cfg: cfg, names: newNameCache(), localDNS: newLocalResolver()}
	if p.outgoing, err = parseSet(cfg.Feature.Network.Outgoing.Filter, true); err != nil {
		t.Fatal(err)
	}
	if p.dns, err = parseSet(cfg.Feature.Network.DNS.Filter, false); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRemoteRouting(t *testing.T) {
	db := netip.MustParseAddrPort("10.0.0.5:5432")
	web := netip.MustParseAddrPort("10.1.0.9:443")
	tests := []struct {
		name  string
		cfg   string
		proto addrfilter.Protocol
		dst   netip.AddrPort
		want  bool
	}{
		{"default remote", `{}`, addrfilter.TCP, web, true},
		{"tcp off", `{"feature": {"network": {"outgoing": {"tcp": false}}}}`, addrfilter.TCP, web, false},
		{"udp off keeps tcp", `{"feature": {"network": {"outgoing": {"udp": false}}}}`, addrfilter.TCP, web, true},
		{"udp off", `{"feature": {"network": {"outgoing": {"udp": false}}}}`, addrfilter.UDP, web, false},
		{"local subnet", `{"feature": {"network": {"outgoing": {"filter": {"local": ["10.0.0.0/24"]}}}}}`, addrfilter.TCP, db, false},
		{"local subnet, other dst", `{"feature": {"network": {"outgoing": {"filter": {"local": ["10.0.0.0/24"]}}}}}`, addrfilter.TCP, web, true},
		{"remote port", `{"feature": {"network": {"outgoing": {"filter": {"remote": [":5432"]}}}}}`, addrfilter.TCP, db, true},
		{"remote port, other dst", `{"feature": {"network": {"outgoing": {"filter": {"remote": [":5432"]}}}}}`, addrfilter.TCP, web, false},
		{"remote udp only", `{"feature": {"network": {"outgoing": {"filter": {"remote": ["udp://:5432"]}}}}}`, addrfilter.TCP, db, false},
	}
	for _, tt := range tests {
		p := proxyFor(t, tt.cfg)
		if got := p.remote(context.Background(), tt.proto, tt.dst); got != tt.want {
			t.Errorf("%s: remote(%v %v) = %v, want %v", tt.name, tt.proto, tt.dst, got, tt.want)
		}
	}
}

// A name filter matches addresses the program got from DNS for that name.
func TestNameFilterUsesDNSAnswers(t *testing.T) {
	p := proxyFor(t, `{"feature": {"network": {"outgoing": {"filter": {"local": ["db.internal:5432"]}}}}}`)
	m := new(dns.Msg)
	m.SetQuestion("db.internal.", dns.TypeA)
	cname, _ := dns.NewRR("db.internal. 60 IN CNAME db-1.internal.")
	a, _ := dns.NewRR("db-1.internal. 60 IN A 10.0.0.5")
	m.Answer = []dns.RR{cname, a}
	b, _ := m.Pack()
	p.remember(b)
	if !p.names.has("DB.internal.", netip.MustParseAddr("10.0.0.5")) {
		t.Fatal("answer not remembered")
	}
	if p.remote(context.Background(), addrfilter.TCP, netip.MustParseAddrPort("10.0.0.5:5432")) {
		t.Error("db.internal:5432 should be local")
	}
	if !p.remote(context.Background(), addrfilter.TCP, netip.MustParseAddrPort("10.0.0.5:80")) {
		t.Error("another port of the same host should stay remote")
	}
}

func TestDNSRouting(t *testing.T) {
	q := func(name string) *dns.Msg { m := new(dns.Msg); m.SetQuestion(dns.Fqdn(name), dns.TypeA); return m }
	tests := []struct {
		cfg, name string
		want      bool
	}{
		{`{}`, "svc.cluster.local", true},
		{`{"feature": {"network": {"dns": false}}}`, "svc.cluster.local", false},
		{`{"feature": {"network": {"dns": {"filter": {"local": ["example.com"]}}}}}`, "example.com", false},
		{`{"feature": {"network": {"dns": {"filter": {"local": ["example.com"]}}}}}`, "svc.cluster.local", true},
		{`{"feature": {"network": {"dns": {"filter": {"remote": ["svc.cluster.local"]}}}}}`, "svc.cluster.local", true},
		{`{"feature": {"network": {"dns": {"filter": {"remote": ["svc.cluster.local"]}}}}}`, "example.com", false},
	}
	for _, tt := range tests {
		if got := proxyFor(t, tt.cfg).dnsRemote(q(tt.name)); got != tt.want {
			t.Errorf("%s: dnsRemote(%s) = %v, want %v", tt.cfg, tt.name, got, tt.want)
		}
	}
}

// ConnectRoute keeps on this machine what the outgoing filter keeps there,
// without looking a name up: a name the program has not resolved yet goes
// through the sandbox's network, whose dial looks it up.
func TestConnectRoute(t *testing.T) {
	db := netip.MustParseAddrPort("10.0.0.5:5432")
	web := netip.MustParseAddrPort("10.1.0.9:443")
	tcp := func() (bool, bool) { return false, true }
	udp := func() (bool, bool) { return true, true }
	other := func() (bool, bool) { return false, false }
	tests := []struct {
		name     string
		cfg      string
		dst      netip.AddrPort
		sock     func() (bool, bool)
		resolved bool // the program resolved db.internal to db's address
		want     bool
	}{
		{"default: the target", `{}`, web, tcp, false, false},
		{"tcp off", `{"feature": {"network": {"outgoing": {"tcp": false}}}}`, web, tcp, false, true},
		{"tcp off, a UDP socket", `{"feature": {"network": {"outgoing": {"tcp": false}}}}`, web, udp, false, false},
		{"udp off", `{"feature": {"network": {"outgoing": {"udp": false}}}}`, web, udp, false, true},
		{"neither TCP nor UDP", `{"feature": {"network": {"outgoing": {"tcp": false}}}}`, web, other, false, false},
		{"local subnet", `{"feature": {"network": {"outgoing": {"filter": {"local": ["10.0.0.0/24"]}}}}}`, db, tcp, false, true},
		{"local subnet, other dst", `{"feature": {"network": {"outgoing": {"filter": {"local": ["10.0.0.0/24"]}}}}}`, web, tcp, false, false},
		{"remote list, other port", `{"feature": {"network": {"outgoing": {"filter": {"remote": [":5432"]}}}}}`, web, tcp, false, true},
		{"local name, not resolved yet", `{"feature": {"network": {"outgoing": {"filter": {"local": ["db.internal"]}}}}}`, db, tcp, false, false},
		{"local name, resolved", `{"feature": {"network": {"outgoing": {"filter": {"local": ["db.internal"]}}}}}`, db, tcp, true, true},
		{"local name, another port", `{"feature": {"network": {"outgoing": {"filter": {"local": ["db.internal:5432"]}}}}}`, web, tcp, false, false},
		{"remote name, not resolved yet", `{"feature": {"network": {"outgoing": {"filter": {"remote": ["db.internal"]}}}}}`, db, tcp, false, false},
		{"remote name, resolved", `{"feature": {"network": {"outgoing": {"filter": {"remote": ["db.internal"]}}}}}`, db, tcp, true, false},
		{"remote name, not that port", `{"feature": {"network": {"outgoing": {"filter": {"remote": ["db.internal:80"]}}}}}`, db, tcp, false, true},
	}
	for _, tt := range tests {
		p := proxyFor(t, tt.cfg)
		if tt.resolved {
			p.names.add("db.internal.", db.Addr())
		}
		local, errno := p.ConnectRoute(tt.dst, tt.sock)
		if local != tt.want || errno != 0 {
			t.Errorf("%s: ConnectRoute(%v) = %v, %v; want %v, 0", tt.name, tt.dst, local, errno, tt.want)
		}
	}
	// The socket's protocol is asked for (a copy of the program's socket,
	// in the sandbox) only when the answer depends on it.
	for _, tt := range []struct {
		cfg  string
		asks bool
	}{
		{`{}`, false},
		{`{"feature": {"network": {"outgoing": {"filter": {"local": ["10.0.0.0/24"]}}}}}`, false},
		{`{"feature": {"network": {"outgoing": {"filter": {"local": ["tcp://10.0.0.0/24"]}}}}}`, true},
		{`{"feature": {"network": {"outgoing": {"udp": false}}}}`, true},
	} {
		asked := false
		proxyFor(t, tt.cfg).ConnectRoute(db, func() (bool, bool) { asked = true; return false, true })
		if asked != tt.asks {
			t.Errorf("%s: asked for the protocol: %v, want %v", tt.cfg, asked, tt.asks)
		}
	}
}
