package intproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"github.com/mirrord-go/mirrord/protocol"
	"github.com/mirrord-go/mirrord/relay"
)

// Subscribe asks the agent for the target's incoming connections to
// req.Port, mirrored or stolen. They arrive through ServeIncoming. The
// subscription ends when cancel is called or the session ends.
func (p *Proxy) Subscribe(ctx context.Context, req protocol.Subscribe) (cancel func(), err error) {
	st, err := p.open(ctx)
	if err != nil {
		return nil, err
	}
	req.HTTPProbes = slices.Contains(p.probePorts, req.Port)
	if err := protocol.Write(st, &req); err != nil {
		st.Close()
		return nil, err
	}
	if _, err := protocol.ReadReply[*protocol.SubscribeReply](st); err != nil {
		st.Close()
		return nil, fmt.Errorf("subscribe to port %d: %w", req.Port, err)
	}
	st.SetDeadline(time.Time{})
	return func() { st.Close() }, nil
}

// IncomingHandler takes one incoming connection. conn carries the peer's
// bytes; for a stolen connection, what is written to conn goes back to the
// peer. The handler owns conn. Handlers are called one at a time, in the
// order the agent delivered the connections, so a handler must return
// promptly and serve conn in a goroutine of its own.
type IncomingHandler func(inc *protocol.Incoming, conn net.Conn)

// incomingHeaderTimeout bounds the wait for an incoming stream's header.
const incomingHeaderTimeout = 5 * time.Second

// ServeIncoming accepts the connections the agent delivers until the
// session ends.
func (p *Proxy) ServeIncoming(h IncomingHandler) {
	for {
		st, err := p.sess.AcceptStream()
		if err != nil {
			return
		}
		// The header is read here, in order, so that handlers see the
		// connections in the order the agent accepted them (`mirrord dump`
		// numbers them so). The agent writes it right after opening the
		// stream; a stream without one is dropped.
		st.SetReadDeadline(time.Now().Add(incomingHeaderTimeout))
		inc, err := protocol.ReadReply[*protocol.Incoming](st)
		if err != nil {
			st.Close()
			continue
		}
		st.SetReadDeadline(time.Time{})
		h(inc, st)
	}
}

// DeliverTo copies an incoming connection to a local connection: both ways
// when stolen; only the peer's bytes when mirrored (the local app's answers
// are read and dropped, since the original app answers the peer).
func DeliverTo(inc *protocol.Incoming, conn, local net.Conn) {
	defer conn.Close()
	defer local.Close()
	if !inc.Mirror {
		relay.Splice(conn, local)
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, local)
		close(done)
	}()
	relay.Copy(local, conn)
	<-done
}
