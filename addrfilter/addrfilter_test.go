package addrfilter

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		dns     bool
		want    string // String() of the parsed filter
		wantErr string
	}{
		{in: "tcp://1.1.1.0/24:1337", want: "tcp://1.1.1.0/24:1337"},
		{in: "1.1.5.0/24", want: "1.1.5.0/24"},
		{in: "1.1.5.7/24", want: "1.1.5.0/24"}, // masked
		{in: "google.com", want: "google.com"},
		{in: "Google.COM.", want: "google.com"},
		{in: ":53", want: ":53"},
		{in: "udp://:53", want: "udp://:53"},
		{in: "UDP://10.0.0.1:53", want: "udp://10.0.0.1:53"},
		{in: "db.svc.cluster.local:5432", want: "db.svc.cluster.local:5432"},
		{in: "my_service:80", want: "my_service:80"},
		{in: "::1", want: "[::1]"},
		{in: "[::1]:8080", want: "[::1]:8080"},
		{in: "fd00::/8", want: "[fd00::/8]"},
		{in: "tcp://[fd00::]/8", wantErr: "unexpected"},
		{in: "[fd00::/8]:443", want: "[fd00::/8]:443"},
		{in: "", wantErr: "empty filter"},
		{in: "tcp://", wantErr: "needs a host"},
		{in: "http://google.com", wantErr: "unknown protocol \"http\""},
		{in: "google.com:", wantErr: "empty port"},
		{in: "google.com:http", wantErr: "invalid port \"http\""},
		{in: "google.com:70000", wantErr: "invalid port"},
		{in: "google.com:0", wantErr: "invalid port"},
		{in: "1.1.1.0/33", wantErr: "invalid subnet"},
		{in: "not a host", wantErr: "neither an IP address nor a valid host name"},
		{in: "-bad.com", wantErr: "neither"},
		{in: "[::1", wantErr: "missing ']'"},
		{in: "1.1.1.1:53", dns: true, want: "1.1.1.1:53"},
		{in: "udp://1.1.1.1:53", dns: true, wantErr: "DNS filter has no protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			f, err := Parse(tt.in, !tt.dns)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got := f.String(); got != tt.want {
				t.Errorf("Parse(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	addr := netip.MustParseAddr
	tests := []struct {
		filter string
		target Target
		want   bool
	}{
		{"tcp://1.1.1.0/24:1337", Target{Protocol: TCP, Addr: addr("1.1.1.9"), Port: 1337}, true},
		{"tcp://1.1.1.0/24:1337", Target{Protocol: UDP, Addr: addr("1.1.1.9"), Port: 1337}, false},
		{"tcp://1.1.1.0/24:1337", Target{Protocol: TCP, Addr: addr("1.1.2.9"), Port: 1337}, false},
		{"tcp://1.1.1.0/24:1337", Target{Protocol: TCP, Addr: addr("1.1.1.9"), Port: 80}, false},
		{"1.1.1.0/24", Target{Protocol: TCP, Addr: addr("::ffff:1.1.1.2"), Port: 80}, true},
		{":53", Target{Protocol: UDP, Addr: addr("8.8.8.8"), Port: 53}, true},
		{":53", Target{Protocol: UDP, Addr: addr("8.8.8.8"), Port: 54}, false},
		{"google.com", Target{Protocol: TCP, Name: "GOOGLE.com.", Addr: addr("142.250.0.1"), Port: 443}, true},
		{"google.com", Target{Protocol: TCP, Addr: addr("142.250.0.1"), Port: 443}, false},
		{"[::1]:80", Target{Protocol: TCP, Addr: addr("::1"), Port: 80}, true},
		{"10.0.0.1", Target{Protocol: TCP, Addr: addr("10.0.0.2"), Port: 80}, false},
	}
	for _, tt := range tests {
		f, err := Parse(tt.filter, true)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Match(tt.target); got != tt.want {
			t.Errorf("%q.Match(%+v) = %v, want %v", tt.filter, tt.target, got, tt.want)
		}
	}
}

func TestSetIsRemote(t *testing.T) {
	must := func(s string) Filter {
		f, err := Parse(s, true)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	db := Target{Protocol: TCP, Addr: netip.MustParseAddr("10.0.0.5"), Port: 5432}
	web := Target{Protocol: TCP, Addr: netip.MustParseAddr("93.184.216.34"), Port: 443}
	tests := []struct {
		name string
		set  Set
		t    Target
		want bool
	}{
		{"no filter: all remote", Set{}, web, true},
		{"local list, matched", Set{Local: []Filter{must("10.0.0.0/8")}}, db, false},
		{"local list, not matched", Set{Local: []Filter{must("10.0.0.0/8")}}, web, true},
		{"remote list, matched", Set{Remote: []Filter{must(":5432")}}, db, true},
		{"remote list, not matched", Set{Remote: []Filter{must(":5432")}}, web, false},
	}
	for _, tt := range tests {
		if got := tt.set.IsRemote(tt.t); got != tt.want {
			t.Errorf("%s: IsRemote = %v, want %v", tt.name, got, tt.want)
		}
	}
}
