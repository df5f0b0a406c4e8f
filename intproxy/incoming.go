package intproxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/mirrord-go/mirrord/protocol"
	"github.com/mirrord-go/mirrord/relay"
)

// Subscribe asks the agent for the target's incoming connections to
// req.Port, mirrored or stolen. They arrive through ServeIncoming. The
// subscription ends when cancel is called or the proxy ends; after a
// reconnection it is made again.
func (p *Proxy) Subscribe(ctx context.Context, req protocol.Subscribe) (cancel func(), err error) {
	req.HTTPProbes = slices.Contains(p.probePorts, req.Port)
	sess, _ := p.current()
	st, err := p.subscribe(ctx, sess, req)
	if err != nil {
		return nil, err
	}
	sub := &subscription{req: req, st: st}
	p.mu.Lock()
	p.subs[sub] = true
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		delete(p.subs, sub)
		st := sub.st
		sub.st = nil
		p.mu.Unlock()
		if st != nil {
			st.Close()
		}
	}, nil
}

// subscription is one port's subscription, kept to be made again on a
// new agent connection. The agent holds it while st is open.
type subscription struct {
	req protocol.Subscribe
	st  *yamux.Stream // guarded by Proxy.mu
}

func (p *Proxy) subscribe(ctx context.Context, sess *yamux.Session, req protocol.Subscribe) (*yamux.Stream, error) {
	st, err := sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("the agent connection is closed: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		st.SetDeadline(dl)
	}
	if err := protocol.Write(st, &req); err != nil {
		st.Close()
		return nil, err
	}
	reply, err := protocol.ReadReply[*protocol.SubscribeReply](st)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("subscribe to port %d: %w", req.Port, err)
	}
	if req.TLS != nil && !reply.TLS {
		// An agent from before TLS ending took the port as cleartext:
		// its filter would see no request, and pass everything on.
		st.Close()
		return nil, fmt.Errorf("subscribe to port %d: the agent does not end TLS (it is older than this mirrord; set agent.image to this version's)", req.Port)
	}
	st.SetDeadline(time.Time{})
	return st, nil
}

// resubscribe makes the subscriptions again on a new agent connection.
func (p *Proxy) resubscribe() {
	p.mu.Lock()
	sess := p.sess
	subs := make([]*subscription, 0, len(p.subs))
	for s := range p.subs {
		subs = append(subs, s)
	}
	p.mu.Unlock()
	for _, sub := range subs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := p.subscribe(ctx, sess, sub.req)
		cancel()
		if err != nil {
			p.event(ResubscribeFailed, "port %d: its incoming traffic stays with the target after the reconnection: %v", sub.req.Port, err)
			continue
		}
		p.mu.Lock()
		if !p.subs[sub] {
			// Cancelled meanwhile.
			p.mu.Unlock()
			st.Close()
			continue
		}
		sub.st = st
		p.mu.Unlock()
	}
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
		sess, changed := p.current()
		st, err := sess.AcceptStream()
		if err != nil {
			select {
			case <-changed: // reconnected
				continue
			case <-p.done:
				return
			}
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
