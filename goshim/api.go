package goshim

import "net/netip"

// Fixed addresses of the sandbox network. They are taken from ranges that
// real destinations do not use (198.18.0.0/15 is reserved for benchmarks,
// fd7a:6d72:6d64::/48 is a random ULA prefix) so they never shadow an
// address the program wants to reach: every other destination is routed
// into the TUN device.
var (
	// SandboxAddr4/6 are the addresses of the TUN interface inside the sandbox.
	SandboxAddr4 = netip.MustParseAddr("198.18.0.1")
	SandboxAddr6 = netip.MustParseAddr("fd7a:6d72:6d64::1")
	// DNSAddr4/6 are served by the netstack: the sandbox's resolv.conf
	// points at them.
	DNSAddr4 = netip.MustParseAddr("198.18.0.53")
	DNSAddr6 = netip.MustParseAddr("fd7a:6d72:6d64::53")
)

// DefaultMTU is the TUN MTU. Measured on a 2-core VM: 1500 gives
// 60–110 MB/s through the gVisor stack, 65520 gives 550–860 MB/s.
const DefaultMTU = 65520

// Spec describes the program to run and its sandbox.
type Spec struct {
	Path string   // program to run; looked up in the PATH of Env when it has no slash
	Args []string // argv, Args[0] included
	Env  []string // the program's environment, KEY=VALUE
	Dir  string   // working directory; empty means mirrord's

	ResolvConf string // content for /etc/resolv.conf in the sandbox; empty leaves the host's
	Hosts      string // content for /etc/hosts; empty leaves the host's
	Hostname   string // UTS hostname in the sandbox; empty keeps the host's
	MTU        int    // 0 means DefaultMTU
}
