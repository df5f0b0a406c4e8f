package agent

import (
	"fmt"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// flushConnections deletes the conntrack entries of the TCP connections
// to port in the target's network namespace that were not redirected to
// the agent's listener (lnPort): the connections the target's app had
// before a steal started (agent.flush_connections).
//
// Why this ends them: NAT is decided when a connection's entry is made,
// so a kept-alive connection from before the redirect would otherwise go
// on reaching the app. Without its entry, the connection's next packet is
// picked up as a new flow, the redirect sends it to the agent's listener,
// which has no such connection and answers with a reset; the peer
// reconnects, and that connection is stolen.
func (t *target) flushConnections(port, lnPort uint16) (int, error) {
	cfg := &netlink.Config{}
	if t.netns != nil {
		cfg.NetNS = int(t.netns.Fd())
	}
	c, err := conntrack.Dial(cfg)
	if err != nil {
		return 0, fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		return 0, fmt.Errorf("conntrack: list connections: %w", err)
	}
	n := 0
	for _, f := range flows {
		if !takenFlow(f, port, lnPort) {
			continue
		}
		if err := c.Delete(f); err != nil {
			return n, fmt.Errorf("conntrack: delete connection %v -> %v: %w", f.TupleOrig.IP.SourceAddress, f.TupleOrig.IP.DestinationAddress, err)
		}
		n++
	}
	return n, nil
}

// takenFlow says whether f is a TCP connection to port that goes to the
// app: its reply comes from port itself, not from the agent's listener.
func takenFlow(f conntrack.Flow, port, lnPort uint16) bool {
	o, r := f.TupleOrig.Proto, f.TupleReply.Proto
	return o.Protocol == unix.IPPROTO_TCP && o.DestinationPort == port &&
		r.SourcePort == port && r.SourcePort != lnPort
}
