package intproxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/mirrord-go/mirrord/protocol"
)

// Redialer says where the agent is after the connection to it dropped:
// the same address for an agent that is still there, a new agent's when
// the old one is gone. It returns an error wrapping ErrAgentGone when
// there is none to go back to; other errors are retried.
type Redialer func(ctx context.Context) (AgentAddr, error)

// ErrAgentGone marks a Redialer's error that no retry can fix (the target
// no longer exists).
var ErrAgentGone = errors.New("no agent to reconnect to")

// EventKind names what happened to the agent connection.
type EventKind int

const (
	// Lost: the connection dropped; the proxy is reconnecting.
	Lost EventKind = iota + 1
	// Reconnected: a new connection is up.
	Reconnected
	// Resubscribed: a port's incoming traffic could not be taken again.
	ResubscribeFailed
	// GaveUp: the proxy could not reconnect and ends.
	GaveUp
	// LimitReached: the agent refused a connection past the session's
	// limit (at most one such event every limitEventEvery).
	LimitReached
)

// Event tells what happened to the agent connection, for progress output.
type Event struct {
	Kind    EventKind
	Message string
}

// WithReconnect makes the proxy reconnect for up to timeout when the
// connection to the agent drops, asking redial where to (nil: the same
// address); events, when not nil, hears about it. The agent is asked to
// keep running that long for this client.
func WithReconnect(timeout time.Duration, redial Redialer, events func(Event)) Option {
	return func(p *Proxy) {
		p.reconnect, p.redial, p.events = timeout, redial, events
	}
}

func (p *Proxy) event(kind EventKind, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	switch kind {
	case Reconnected:
		p.log.Info(msg)
	default:
		p.log.Warn(msg)
	}
	if p.events != nil {
		p.events(Event{Kind: kind, Message: msg})
	}
}

// supervise watches the agent connection and replaces it when it drops.
func (p *Proxy) supervise() {
	for {
		sess, _ := p.current()
		select {
		case <-sess.CloseChan():
		case <-p.done:
			return
		}
		p.mu.Lock()
		closing := p.closing
		p.mu.Unlock()
		if closing {
			return
		}
		if p.reconnect <= 0 {
			p.end(errors.New("lost the connection to the agent"))
			return
		}
		start := time.Now()
		p.event(Lost, "lost the connection to the agent; reconnecting (up to %v)", p.reconnect)
		next, hello, err := p.redialLoop(start.Add(p.reconnect))
		if err != nil {
			p.event(GaveUp, "could not reconnect to the agent: %v", err)
			p.end(fmt.Errorf("lost the connection to the agent and could not reconnect: %w", err))
			return
		}
		p.mu.Lock()
		if p.closing {
			p.mu.Unlock()
			next.Close()
			return
		}
		p.sess, p.hello = next, hello
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
		p.event(Reconnected, "reconnected to the agent after %v", time.Since(start).Round(time.Millisecond))
		p.resubscribe()
	}
}

// redialLoop connects again until deadline: each attempt asks the
// Redialer where the agent is.
func (p *Proxy) redialLoop(deadline time.Time) (*yamux.Session, protocol.HelloReply, error) {
	wait := 100 * time.Millisecond
	var last error
	for {
		p.mu.Lock()
		closing := p.closing
		p.mu.Unlock()
		if closing {
			return nil, protocol.HelloReply{}, errors.New("the session is closing")
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, protocol.HelloReply{}, fmt.Errorf("gave up after %v: %w", p.reconnect, last)
		}
		ctx, cancel := context.WithTimeout(context.Background(), min(left, 10*time.Second))
		sess, hello, err := p.redialOnce(ctx)
		cancel()
		if err == nil {
			return sess, hello, nil
		}
		var refused *protocol.ErrorReply
		if errors.Is(err, ErrAgentGone) || errors.As(err, &refused) {
			return nil, protocol.HelloReply{}, err
		}
		if last == nil || last.Error() != err.Error() {
			p.log.Debug("reconnect attempt", "err", err)
		}
		last = err
		time.Sleep(min(wait, time.Until(deadline)))
		wait = min(2*wait, time.Second)
	}
}

func (p *Proxy) redialOnce(ctx context.Context) (*yamux.Session, protocol.HelloReply, error) {
	a := p.agent
	if p.redial != nil {
		var err error
		if a, err = p.redial(ctx); err != nil {
			return nil, protocol.HelloReply{}, err
		}
		p.agent = a
	}
	return p.dialAgent(ctx, a)
}
