package addrfilter

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Protocol restricts a filter to one transport.
type Protocol uint8

const (
	AnyProtocol Protocol = iota
	TCP
	UDP
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return "any"
}

// Filter is one parsed filter string. The zero value of each part means
// "any": no Name, no Addr and no Subnet match every host; Port 0 matches
// every port.
type Filter struct {
	Protocol Protocol
	Name     string       // a host name, lower-cased, matched against the name the app asked for
	Addr     netip.Addr   // a single address
	Subnet   netip.Prefix // a subnet
	Port     uint16
}

// Parse parses one filter string. allowProtocol is false for DNS filters,
// which have no protocol part.
func Parse(s string, allowProtocol bool) (Filter, error) {
	var f Filter
	rest := strings.TrimSpace(s)
	if rest == "" {
		return f, fmt.Errorf("empty filter; expected [protocol://][name|address|subnet/mask][:port]")
	}
	if proto, after, ok := strings.Cut(rest, "://"); ok {
		if !allowProtocol {
			return f, fmt.Errorf("%q: a DNS filter has no protocol part; expected [name|address|subnet/mask][:port]", s)
		}
		switch strings.ToLower(proto) {
		case "tcp":
			f.Protocol = TCP
		case "udp":
			f.Protocol = UDP
		default:
			return f, fmt.Errorf("%q: unknown protocol %q; expected tcp or udp", s, proto)
		}
		rest = after
	}
	host, port, err := splitHostPort(rest)
	if err != nil {
		return f, fmt.Errorf("%q: %w", s, err)
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return f, fmt.Errorf("%q: invalid port %q; expected a number from 1 to 65535", s, port)
		}
		f.Port = uint16(n)
	}
	switch {
	case host == "":
		if port == "" {
			return f, fmt.Errorf("%q: needs a host, an address, a subnet or a port", s)
		}
	case strings.Contains(host, "/"):
		p, err := netip.ParsePrefix(host)
		if err != nil {
			return f, fmt.Errorf("%q: invalid subnet %q; expected address/mask such as 10.0.0.0/8", s, host)
		}
		f.Subnet = p.Masked()
	default:
		if a, err := netip.ParseAddr(host); err == nil {
			f.Addr = a.Unmap()
			break
		}
		if !validHostname(host) {
			return f, fmt.Errorf("%q: %q is neither an IP address nor a valid host name", s, host)
		}
		f.Name = strings.ToLower(strings.TrimSuffix(host, "."))
	}
	return f, nil
}

// splitHostPort splits "host:port", "[v6]:port", "[v6]", a bare IPv6
// address or subnet (more than one colon, no brackets: no port), "host" and ":port".
func splitHostPort(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", fmt.Errorf("missing ']' after IPv6 address")
		}
		host, rest := s[1:end], s[end+1:]
		if rest == "" {
			return host, "", nil
		}
		if !strings.HasPrefix(rest, ":") {
			return "", "", fmt.Errorf("unexpected %q after ']'", rest)
		}
		return host, rest[1:], nil
	}
	switch strings.Count(s, ":") {
	case 0:
		return s, "", nil
	case 1:
		host, port, _ := strings.Cut(s, ":")
		if port == "" {
			return "", "", fmt.Errorf("empty port after ':'")
		}
		return host, port, nil
	}
	return s, "", nil // bare IPv6
}

func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// String formats f back into filter syntax.
func (f Filter) String() string {
	var b strings.Builder
	if f.Protocol != AnyProtocol {
		b.WriteString(f.Protocol.String() + "://")
	}
	switch {
	case f.Name != "":
		b.WriteString(f.Name)
	case f.Addr.IsValid() && f.Addr.Is6():
		b.WriteString("[" + f.Addr.String() + "]")
	case f.Addr.IsValid():
		b.WriteString(f.Addr.String())
	case f.Subnet.IsValid() && f.Subnet.Addr().Is6():
		b.WriteString("[" + f.Subnet.String() + "]")
	case f.Subnet.IsValid():
		b.WriteString(f.Subnet.String())
	}
	if f.Port != 0 {
		b.WriteString(":" + strconv.Itoa(int(f.Port)))
	}
	return b.String()
}

// Target describes one connection (or DNS query) to test against filters.
// Name is the host name the application resolved to reach Addr, if known.
type Target struct {
	Protocol Protocol
	Name     string
	Addr     netip.Addr
	Port     uint16
}

// Match reports whether t is selected by f.
func (f Filter) Match(t Target) bool {
	if f.Protocol != AnyProtocol && f.Protocol != t.Protocol {
		return false
	}
	if f.Port != 0 && f.Port != t.Port {
		return false
	}
	switch {
	case f.Name != "":
		return strings.EqualFold(strings.TrimSuffix(t.Name, "."), f.Name)
	case f.Addr.IsValid():
		return t.Addr.IsValid() && f.Addr == t.Addr.Unmap()
	case f.Subnet.IsValid():
		return t.Addr.IsValid() && f.Subnet.Contains(t.Addr.Unmap())
	}
	return true
}

// Set is the parsed form of a filter section: traffic matching Local goes
// to the local network, traffic matching Remote goes through the cluster.
// At most one of the two lists is set.
type Set struct {
	Local  []Filter
	Remote []Filter
}

// Remote reports whether t should go to the cluster. With no lists at all
// everything is remote; with a local list, what matches it is local; with a
// remote list, only what matches it is remote.
func (s Set) IsRemote(t Target) bool {
	switch {
	case len(s.Remote) > 0:
		return anyMatch(s.Remote, t)
	case len(s.Local) > 0:
		return !anyMatch(s.Local, t)
	}
	return true
}

func anyMatch(fs []Filter, t Target) bool {
	for _, f := range fs {
		if f.Match(t) {
			return true
		}
	}
	return false
}
